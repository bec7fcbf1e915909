"""A step recorded as it runs, and re-run from its recording alone: the same, tampered with, or gone another way."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.services.worker_agent.test_runner import OpenGuard, _envelope

from handrail.contracts import AgentSpec, load_contracts
from handrail.lifecycle import context_after, step_completed
from handrail.llm import ScriptedProvider
from handrail.llm.models import load_catalogue
from handrail.messages import BudgetSnapshot, HandoffEnvelope, StepCompleted, StepRecording
from handrail.patch import diff
from handrail.prompts import PromptLibrary, PromptTemplate, parse_ref
from handrail.tools import Tool, ToolContext, ToolRegistry, default_registry
from handrail_worker.replay import Committed, replay_step, rerun_live
from handrail_worker.runner import StepOutcome, StepRunner

CONFIG = Path(__file__).resolve().parents[3] / "config"
CONTRACTS = load_contracts(CONFIG, default_registry().names())
LIBRARY = PromptLibrary(CONFIG / "prompts")
TASK = {"employee_id": "E101", "amount": 200, "currency": "GBP", "description": "client dinner"}


class Declared:
    """The agent's declared prompt version, from the files (a live step's prompt store, without Redis)."""

    library = LIBRARY

    async def resolve(self, ref: str, *, agent: str | None = None, task_id: str | None = None) -> PromptTemplate:
        return LIBRARY.load(*parse_ref(ref))


def counted(registry: ToolRegistry, calls: list[str]) -> ToolRegistry:
    """``registry``'s tools, each noting in ``calls`` when it really runs."""

    def counting(tool: Tool) -> Tool:
        async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
            calls.append(tool.spec.name)
            result: dict[str, Any] = await tool.run(args, ctx)
            return result

        return replace(tool, run=run)

    return ToolRegistry([counting(t) for name in sorted(registry.names()) if (t := registry.get(name)) is not None])


async def run_live(agent: AgentSpec, envelope: HandoffEnvelope) -> StepCompleted:
    """The step as a worker runs it, and the report it sends (with its recording)."""
    runner = StepRunner(agent, ScriptedProvider(agent.plan), default_registry(), prompts=Declared())
    outcome = await runner.run(envelope, OpenGuard())
    assert isinstance(outcome, StepOutcome)
    context = context_after(envelope, outcome.output)
    return step_completed(
        envelope,
        agent=agent.name,
        output=outcome.output,
        context=context,
        patch=diff(envelope.context, context),
        budget=BudgetSnapshot(),
        decisions=outcome.decisions,
        recording=outcome.recording,
    )


async def replay(report: StepCompleted, envelope: HandoffEnvelope, committed: Committed, tools: ToolRegistry) -> Any:
    agent = CONTRACTS.agent(report.agent)
    return await replay_step(
        agent, tools, CONTRACTS.workflows, load_catalogue(CONFIG), LIBRARY, envelope, report, committed
    )


def committed_by(report: StepCompleted) -> Committed:
    """What the validator's audit record of ``report`` holds."""
    assert report.recording is not None
    return Committed(report.recording.content_hash(), report.context_hash, "step.completed")


def with_tool_result(recording: StepRecording, tool: str, result: dict[str, Any]) -> StepRecording:
    calls = [c.model_copy(update={"reply": result}) if c.name == tool else c for c in recording.calls]
    return recording.model_copy(update={"calls": calls})


async def test_a_step_records_every_answer_in_order_and_replays_to_the_same_context_calling_nothing() -> None:
    agent = CONTRACTS.agent("expense-intake")
    envelope = _envelope(TASK)
    report = await run_live(agent, envelope)
    assert report.recording is not None and report.recording.prompt == "expense-intake@1"
    kinds = [(c.kind, c.name) for c in report.recording.calls]
    assert kinds == [
        ("model", "scripted"),
        ("tool", "lookup_employee"),
        ("model", "scripted"),
        ("tool", "convert_currency"),
        ("model", "scripted"),
    ]
    assert report.recording.calls[1].reply is not None and report.recording.calls[1].reply["name"] == "Ben Ode"

    ran: list[str] = []
    replayed = await replay(report, envelope, committed_by(report), counted(default_registry(), ran))
    assert (replayed.outcome, replayed.played, replayed.recorded) == ("same", 5, 5), replayed
    assert replayed.context_hash == report.context_hash
    assert ran == [], "a replay calls no tool"


async def test_a_recording_altered_after_the_step_does_not_hash_to_what_the_trail_committed() -> None:
    envelope = _envelope(TASK)
    report = await run_live(CONTRACTS.agent("expense-intake"), envelope)
    assert report.recording is not None
    forged = with_tool_result(report.recording, "convert_currency", {"amount_usd": 1.0, "rate": 0.005})
    tampered = report.model_copy(update={"recording": forged})

    replayed = await replay(tampered, envelope, committed_by(report), default_registry())
    assert replayed.outcome == "tampered" and "altered after the step ran" in replayed.detail, replayed


async def test_a_forged_recording_with_a_forged_hash_replays_to_another_context_and_says_where() -> None:
    """Even a forger who could rewrite the trail's hash too is caught: the next request is not the recorded one."""
    envelope = _envelope(TASK)
    report = await run_live(CONTRACTS.agent("expense-intake"), envelope)
    assert report.recording is not None
    forged = with_tool_result(report.recording, "lookup_employee", {"employee_id": "E101", "name": "Mallory"})
    tampered = report.model_copy(update={"recording": forged})
    committed = Committed(forged.content_hash(), report.context_hash, "step.completed")

    replayed = await replay(tampered, envelope, committed, default_registry())
    assert replayed.outcome == "diverged" and replayed.played == 2, replayed
    assert "call 3: the re-run was asked something else" in replayed.detail


async def test_another_prompt_version_or_context_diverges_at_the_first_model_call() -> None:
    envelope = _envelope(TASK)
    report = await run_live(CONTRACTS.agent("expense-intake"), envelope)
    assert report.recording is not None
    other_prompt = report.model_copy(
        update={"recording": report.recording.model_copy(update={"prompt": "expense-intake@2"})}
    )
    committed = Committed(other_prompt.recording.content_hash(), report.context_hash, "step.completed")  # type: ignore[union-attr]
    replayed = await replay(other_prompt, envelope, committed, default_registry())
    assert replayed.outcome == "diverged" and replayed.played == 0 and replayed.detail.startswith("call 1:"), replayed

    elsewhere = _envelope({**TASK, "amount": 300})
    replayed = await replay(report, elsewhere, committed_by(report), default_registry())
    assert replayed.outcome == "diverged" and replayed.played == 0, replayed


async def test_a_step_that_made_fewer_calls_than_recorded_is_a_divergence() -> None:
    envelope = _envelope(TASK)
    report = await run_live(CONTRACTS.agent("expense-intake"), envelope)
    assert report.recording is not None
    longer = report.recording.model_copy(update={"calls": [*report.recording.calls, report.recording.calls[1]]})
    padded = report.model_copy(update={"recording": longer})
    replayed = await replay(padded, envelope, committed_by(padded), default_registry())
    assert replayed.outcome == "diverged" and "went on to 1 more" in replayed.detail, replayed


async def test_a_step_without_a_recording_is_not_rerun() -> None:
    envelope = _envelope(TASK)
    report = (await run_live(CONTRACTS.agent("expense-intake"), envelope)).model_copy(update={"recording": None})
    replayed = await replay(
        report, envelope, Committed(None, report.context_hash, "step.completed"), default_registry()
    )
    assert replayed.outcome == "not_rerun", replayed


# -- live: the model and side-effect-free tools for real, side effects dry ------------------------------------


def decide_envelope(intake: StepCompleted) -> HandoffEnvelope:
    """The approver's handoff after ``intake``, as the validator sends it."""
    return HandoffEnvelope(
        message_id="m2",
        task_id="t",
        workflow="expense-approval",
        step="decide",
        step_index=1,
        sender="validator",
        receiver="expense-approver",
        goal="g",
        context=intake.context,
        context_hash=intake.context_hash,
        parent_hash=intake.parent_hash,
        idempotency_key="k2",
    )


def with_plan(agent: AgentSpec, answer: dict[str, Any]) -> AgentSpec:
    """``agent`` whose scripted model ends on ``answer`` instead (a new prompt or model, as far as the step goes)."""
    plan = [*agent.model_dump(mode="json")["plan"][:-1], {"answer": answer}]
    return AgentSpec.model_validate({**agent.model_dump(mode="json"), "plan": plan})


async def test_a_live_rerun_calls_the_model_and_free_tools_again_and_a_side_effect_never(tmp_path: Path) -> None:
    ran: list[str] = []
    tools = counted(default_registry(tmp_path), ran)
    intake = await run_live(CONTRACTS.agent("expense-intake"), _envelope(TASK))
    approver = CONTRACTS.agent("expense-approver")
    envelope = decide_envelope(intake)
    runner = StepRunner(approver, ScriptedProvider(approver.plan), tools, prompts=Declared())
    outcome = await runner.run(envelope, OpenGuard())
    assert isinstance(outcome, StepOutcome) and ran == ["check_policy", "record_decision"]
    context = context_after(envelope, outcome.output)
    report = step_completed(
        envelope, agent=approver.name, output=outcome.output, context=context,
        patch=diff(envelope.context, context), budget=BudgetSnapshot(), recording=outcome.recording,
    )  # fmt: skip

    same = await rerun_live(
        approver, ScriptedProvider(approver.plan), tools, CONTRACTS.workflows, load_catalogue(CONFIG), LIBRARY,
        envelope, report,
    )  # fmt: skip
    assert (same.outcome, same.patch) == ("same", []), same
    assert (
        same.calls
        == same.recorded_calls
        == ["model scripted", "tool check_policy", "model scripted", "tool record_decision", "model scripted"]
    )
    assert ran == ["check_policy", "record_decision", "check_policy"], "the side effect answered from the recording"

    changed_agent = with_plan(approver, {**report.output, "reasons": ["a new prompt says so"]})
    changed = await rerun_live(
        changed_agent, ScriptedProvider(changed_agent.plan), tools, CONTRACTS.workflows, load_catalogue(CONFIG),
        LIBRARY, envelope, report,
    )  # fmt: skip
    assert changed.outcome == "changed" and changed.detail == "1 change(s) to the output", changed
    assert changed.patch == [{"op": "replace", "path": "/reasons/0", "value": "a new prompt says so"}], changed.patch

    broken_agent = with_plan(approver, {"decision": "maybe"})
    broken = await rerun_live(
        broken_agent, ScriptedProvider(broken_agent.plan), tools, CONTRACTS.workflows, load_catalogue(CONFIG),
        LIBRARY, envelope, report,
    )  # fmt: skip
    assert broken.outcome == "failed" and "breaks the step's schema" in broken.detail, broken
    assert "record_decision" not in ran[3:], "never run for real on a re-run"


async def test_a_live_rerun_of_a_side_effect_the_recorded_step_never_made_fails_that_call_not_the_world(
    tmp_path: Path,
) -> None:
    ran: list[str] = []
    tools = counted(default_registry(tmp_path), ran)
    intake = await run_live(CONTRACTS.agent("expense-intake"), _envelope(TASK))
    approver = CONTRACTS.agent("expense-approver")
    envelope = decide_envelope(intake)
    report = step_completed(
        envelope, agent=approver.name, output={}, context=envelope.context, patch=[], budget=BudgetSnapshot(),
        recording=StepRecording(prompt="expense-approver@1", calls=[]),
    )  # fmt: skip
    rerun = await rerun_live(
        approver, ScriptedProvider(approver.plan), tools, CONTRACTS.workflows, load_catalogue(CONFIG), LIBRARY,
        envelope, report,
    )  # fmt: skip
    assert "record_decision" not in ran
    assert "tool record_decision" in rerun.calls, rerun
    assert rerun.outcome == "changed", rerun
