"""The step runner with section caps and context views: a long conversation stays within the window under
each policy, reservations use the prompt's own count, and the agent sees only its step's view."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from handrail.context import message_hash
from handrail.contracts import AgentSpec, StepSpec, WorkflowSpec
from handrail.contracts.agents import ScriptedAnswer, ScriptedCall
from handrail.contracts.context import ContextBudget, Policy, SectionCaps
from handrail.errors import TaskHalted
from handrail.hashing import GENESIS, context_hash
from handrail.llm import ModelReply, ModelRequest, ScriptedProvider
from handrail.llm.compaction import is_summary_request
from handrail.llm.tokens import ESTIMATED
from handrail.messages import HandoffEnvelope, StepResume
from handrail.tools import Tool, ToolCallError, ToolContext, ToolRegistry, ToolSpec, default_registry
from handrail_worker.guard import Ticket
from handrail_worker.runner import SUMMARY_PROMPT, Proposal, StepOutcome, StepRunner

TURNS = 50
WINDOW_TOKENS = 1200
MAX_OUTPUT_TOKENS = 200
EMPLOYEES = ["E100", "E101", "E102", "E103"]


class CountingGuard:
    """Grants every call and keeps the prompt size each model call was reserved with."""

    def __init__(self) -> None:
        self.reserved: list[int] = []

    async def start(self) -> None:
        pass

    async def before_model_call(self, index: int, model: str, prompt_tokens: int, prompt: str | None = None) -> Ticket:
        self.reserved.append(prompt_tokens)
        return Ticket(f"r{index}", "model_call", model, None, time.perf_counter())

    async def before_tool_call(self, index: int, spec: ToolSpec, args_hash: str) -> Ticket | ToolCallError:
        return Ticket(f"r{index}", "tool_call", spec.name, args_hash, time.perf_counter())

    async def after_call(self, ticket: Ticket, outcome: str, error_type: str | None = None, **_: Any) -> None:
        pass


class RecordingProvider:
    """The scripted model, keeping every request it was sent."""

    name = "scripted"

    def __init__(self, agent: AgentSpec) -> None:
        self.scripted = ScriptedProvider(agent.plan)
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        return await self.scripted.complete(request)


def _agent(budget: ContextBudget | None = None, *, turns: int = TURNS) -> AgentSpec:
    calls = [ScriptedCall(call="lookup_employee", args={"employee_id": EMPLOYEES[i % 4]}) for i in range(turns - 1)]
    return AgentSpec(
        name="chatty",
        owner="tests",
        purpose="Looks people up, again and again.",
        model_chain=["scripted"],
        prompt="chatty@1",
        tools=["lookup_employee"],
        limits={"max_turns": turns + 5, "max_output_tokens": MAX_OUTPUT_TOKENS},
        context=budget or ContextBudget(),
        plan=[*calls, ScriptedAnswer(answer={"done": True, "last": "${tools.lookup_employee.employee_id}"})],
    )


def _envelope(context: dict[str, Any] | None = None, workflow: str = "w", step: str = "look") -> HandoffEnvelope:
    context = context if context is not None else {"input": {"who": "everyone"}, "steps": {}}
    return HandoffEnvelope(
        message_id="m",
        task_id="t",
        workflow=workflow,
        step=step,
        step_index=0,
        sender="router",
        receiver="chatty",
        goal="g",
        context=context,
        context_hash=context_hash(context),
        parent_hash=GENESIS,
        idempotency_key="k",
    )


async def _run(agent: AgentSpec, **runner: Any) -> tuple[StepOutcome, RecordingProvider, CountingGuard]:
    provider, guard = RecordingProvider(agent), CountingGuard()
    outcome = await StepRunner(agent, provider, default_registry(), **runner).run(_envelope(), guard)
    assert isinstance(outcome, StepOutcome)
    return outcome, provider, guard


def _tokens(request: ModelRequest) -> int:
    return ESTIMATED.prompt(request.messages, request.tools)


def _budget(policy: Policy) -> ContextBudget:
    return ContextBudget(
        window_tokens=WINDOW_TOKENS,
        sections=SectionCaps(history=300, observations=400),
        policy=policy,
        keep_last_turns=4,
        summary_max_tokens=120,
    )


async def test_without_caps_the_50_turn_conversation_outgrows_the_window() -> None:
    outcome, provider, guard = await _run(_agent())
    assert outcome.output["done"] is True and outcome.usage.model_calls == TURNS
    assert _tokens(provider.requests[-1]) + MAX_OUTPUT_TOKENS > 2 * WINDOW_TOKENS  # what the caps must fix
    assert outcome.context_seen is not None and outcome.context_seen.compactions == []
    assert guard.reserved == [_tokens(r) for r in provider.requests]


@pytest.mark.parametrize("policy", list(Policy))
async def test_a_50_turn_conversation_stays_within_the_window_under_each_policy(policy: Policy) -> None:
    outcome, provider, guard = await _run(_agent(_budget(policy)))

    # The plan ran to its end: the scripted model kept its place although turns were left out.
    assert outcome.output == {"done": True, "last": EMPLOYEES[(TURNS - 2) % 4]}
    turns = [r for r in provider.requests if not is_summary_request(r)]
    assert len(turns) == TURNS
    for request in provider.requests:
        assert _tokens(request) + MAX_OUTPUT_TOKENS <= WINDOW_TOKENS
    for request in turns:
        observations = [m for m in request.messages if m.role == "tool"]
        assert sum(ESTIMATED.message(m) for m in observations) <= 400
    # Every call, summaries included, was reserved with exactly the count its prompt was fitted with.
    assert guard.reserved == [_tokens(r) for r in provider.requests]

    seen = outcome.context_seen
    assert seen is not None and seen.compactions
    assert {c.policy for c in seen.compactions} == {policy.value}
    ever_sent = {message_hash(m) for r in turns for m in r.messages}
    last = provider.requests[-1].messages
    for compaction in seen.compactions:
        assert set(compaction.replaced) <= ever_sent  # it names messages the model had been shown
    replaced = {h for c in seen.compactions for h in c.replaced}
    if policy == Policy.DROP_OLDEST_OBSERVATIONS:
        stubs = [json.loads(m.content) for r in turns for m in r.messages if m.role == "tool" and "elided" in m.content]
        assert stubs and {s["elided"] for s in stubs} <= {h[:12] for h in replaced}
    else:
        assert not replaced & {message_hash(m) for m in last}  # what was replaced is no longer shown
        assert last[2].role == "user" and last[2].content.startswith("[handrail: ")
    if policy == Policy.SUMMARISE:
        summaries = [d for d in outcome.decisions if d.prompt == SUMMARY_PROMPT]
        assert summaries and len(summaries) == len(seen.compactions) == len(provider.requests) - TURNS
        assert outcome.usage.model_calls == TURNS + len(summaries)  # paid for and counted like any call
        assert all(c.summary and ESTIMATED.count_text(c.summary) <= 120 for c in seen.compactions)
        assert seen.compactions[-1].summary in last[2].content
        assert "lookup_employee" in last[2].content


async def test_a_task_section_over_its_cap_halts_before_the_call() -> None:
    agent = _agent(ContextBudget(sections=SectionCaps(task=5)), turns=2)
    with pytest.raises(TaskHalted) as halted:
        await _run(agent)
    assert halted.value.error_type == "context_over_cap"
    assert "the task section takes" in halted.value.reason and "over its cap of 5" in halted.value.reason


async def test_the_agent_is_shown_its_steps_view_and_the_view_hash_is_recorded() -> None:
    workflow = WorkflowSpec(
        name="w",
        goal="g",
        input_schema={"type": "object"},
        views={"just-amount": ["/input/amount"]},
        steps=[StepSpec(name="look", agent="chatty", output_schema={"type": "object"}, context_view="just-amount")],
    )
    agent = _agent(turns=1)
    provider, guard = RecordingProvider(agent), CountingGuard()
    context = {"input": {"amount": 5, "secret": "s3cret"}, "steps": {"before": {"salary": 99}}}
    runner = StepRunner(agent, provider, default_registry(), workflows={"w": workflow})
    outcome = await runner.run(_envelope(context), guard)
    assert isinstance(outcome, StepOutcome)
    [request] = provider.requests
    shown = json.loads(request.messages[1].content)["context"]
    assert shown == {"input": {"amount": 5}}
    assert all("s3cret" not in m.content and "salary" not in m.content for m in request.messages)
    assert outcome.context_seen is not None
    assert outcome.context_seen.view == "just-amount" and outcome.context_seen.pointers == ["/input/amount"]
    assert outcome.context_seen.view_hash == context_hash({"input": {"amount": 5}})


def _registry_with_approval() -> ToolRegistry:
    """The lookups, and a call a person must approve before it runs."""

    async def pay(args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return {"paid": True}

    lookup = default_registry().get("lookup_employee")
    assert lookup is not None
    return ToolRegistry([lookup, Tool(ToolSpec("pay", "pay someone", {"type": "object"}, requires_approval=True), pay)])


async def test_a_step_parked_for_approval_carries_on_with_its_compactions() -> None:
    lookups = [ScriptedCall(call="lookup_employee", args={"employee_id": EMPLOYEES[i % 4]}) for i in range(20)]
    plan = [*lookups, ScriptedCall(call="pay", args={"to": "E100"}), *lookups[:5], ScriptedAnswer(answer={"ok": 1})]
    agent = _agent(_budget(Policy.SUMMARISE)).model_copy(update={"tools": ["lookup_employee", "pay"], "plan": plan})
    provider, guard = RecordingProvider(agent), CountingGuard()
    runner = StepRunner(agent, provider, _registry_with_approval())
    parked = await runner.run(_envelope(), guard)
    assert isinstance(parked, Proposal) and parked.call.tool == "pay"
    carried = parked.progress.context_seen
    assert carried is not None and carried.compactions  # the summaries so far travel with the step
    summaries_before = sum(1 for r in provider.requests if is_summary_request(r))
    assert summaries_before == len(carried.compactions)

    resume = StepResume(
        review_id="r1", decision="approved", arguments={"to": "E100"}, by=["ann"], progress=parked.progress
    )
    resumed = await runner.run(_envelope().model_copy(update={"resume": resume}), guard)
    assert isinstance(resumed, StepOutcome) and resumed.output == {"ok": 1}
    assert resumed.context_seen is not None
    assert resumed.context_seen.compactions[: len(carried.compactions)] == carried.compactions
    assert all(_tokens(r) + MAX_OUTPUT_TOKENS <= WINDOW_TOKENS for r in provider.requests)
    # After the approval the step went on from its summary: no turn summarised before is summarised again.
    before = {h for c in carried.compactions for h in c.replaced}
    later = resumed.context_seen.compactions[len(carried.compactions) :]
    assert all(not before & set(c.replaced) for c in later)
    assert sum(1 for r in provider.requests if is_summary_request(r)) == summaries_before + len(later)
