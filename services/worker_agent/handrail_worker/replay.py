"""Re-running a recorded step offline: the worker's own runner, its model and tools played back.

``replay_step`` takes the handoff a step ran on, the report it sent (with its ``StepRecording``)
and what the audit trail committed (the recording's hash, the context hash the step led to). It
checks the recording against the trail, then runs the step again with a ``Player`` as its tape:
no model or tool is called, each call must be the recorded one, and the step must end where it
ended: the same context hash for a completed step, the same proposed call for one that stopped
for approval. The prompt is the version the step rendered (from the prompt files), the agent and
its tools are today's config: a change to either shows as a divergence, which is the point.

Not re-run (said so): a step that did not finish (failed or halted: its report carries no
recording), and a step of an agent with MCP tools (their schemas are the servers').

``rerun_live`` runs a step again for real, from the same handoff: its model is called (another
prompt version or model if asked), tools without side effects run, and a side-effecting tool runs
dry: it answers what the recorded step got from the same call, or fails saying it was not run.
Its output is compared with the recorded one: ``same``, ``changed`` (with the JSON Patch from the
recorded output to the new one), or ``failed`` (it did not finish, or its output breaks the step's
schema).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

from handrail.contracts import AgentSpec, WorkflowSpec
from handrail.errors import HandrailError, TaskHalted
from handrail.hashing import context_hash
from handrail.lifecycle import context_after
from handrail.llm import ModelProvider, ModelReply, ModelRequest
from handrail.llm.models import ModelCatalogue
from handrail.messages import HandoffEnvelope, RecordedCall, StepCompleted, StepOverrides
from handrail.patch import diff
from handrail.prompts import PromptLibrary, PromptTemplate, parse_ref
from handrail.tools import ToolCallError, ToolFailure, ToolRegistry, ToolSpec
from handrail_worker.guard import Ticket
from handrail_worker.runner import Proposal, StepRunner
from handrail_worker.tape import Diverged, Player, Recorder

Outcome = Literal["same", "diverged", "tampered", "not_rerun"]


@dataclass(frozen=True)
class StepReplay:
    """How one step's re-run compares with what it did the first time."""

    step: str
    agent: str
    outcome: Outcome
    detail: str
    #: How many recorded calls the re-run played (of ``recorded``).
    played: int = 0
    recorded: int = 0
    context_hash: str | None = None


@dataclass(frozen=True)
class Committed:
    """What the step's audit record holds: the recording's hash, and where the step left the chain."""

    recording_hash: str | None
    output_hash: str | None
    status: str


async def replay_step(
    agent: AgentSpec,
    tools: ToolRegistry,
    workflows: Mapping[str, WorkflowSpec],
    catalogue: ModelCatalogue,
    library: PromptLibrary,
    envelope: HandoffEnvelope,
    report: StepCompleted,
    committed: Committed,
) -> StepReplay:
    """Re-run ``report``'s step from its recording, and say whether it did the same."""

    def result(outcome: Outcome, detail: str, player: Player | None = None, hash_: str | None = None) -> StepReplay:
        played = player.position if player is not None else 0
        recorded = len(report.recording.calls) if report.recording is not None else 0
        return StepReplay(report.step, report.agent, outcome, detail, played, recorded, hash_)

    recording = report.recording
    if recording is None or committed.recording_hash is None:
        return result("not_rerun", f"the step {committed.status.removeprefix('step.')} without a recording")
    actual = recording.content_hash()
    if actual != committed.recording_hash:
        return result(
            "tampered",
            f"its recording hashes to {actual[:16]}…, the audit trail committed {committed.recording_hash[:16]}…: "
            "it was altered after the step ran",
        )
    if agent.mcp_servers:
        return result("not_rerun", "the agent has MCP tools: their schemas are the servers', not on record")
    player = Player(recording.calls)
    try:
        pinned = _Pinned(library, parse_ref(recording.prompt)[1])
        library.load(*parse_ref(recording.prompt))
    except HandrailError as exc:
        return result("not_rerun", f"prompt {recording.prompt}: {exc}")
    runner = StepRunner(
        agent,
        _NoModel(),
        tools,
        prompts=pinned,
        workflows=workflows,
        models=catalogue,
        tapes=lambda _: player,
    )
    try:
        outcome = await runner.run(_pinned_prompt(envelope, agent.name, recording.prompt), _ReplayGuard(player))
    except Diverged as exc:
        return result("diverged", str(exc), player)
    except TaskHalted as exc:
        return result("diverged", f"the re-run halted ({exc.error_type}: {exc}) where the step went on", player)
    if player.left:
        first = player.left[0]
        return result(
            "diverged",
            f"the re-run ended after {player.position} calls; the step went on to {len(player.left)} more "
            f"(next: a {first.kind} call {first.name})",
            player,
        )
    if isinstance(outcome, Proposal):
        proposed = report.proposal if report.status == "awaiting_approval" else None
        if proposed is not None and outcome.call.idempotency_key == proposed.idempotency_key:
            return result("same", f"stopped for approval of {outcome.call.tool} again", player)
        return result("diverged", f"the re-run stopped for approval of {outcome.call.tool}", player)
    if report.status != "completed":
        return result("diverged", f"the re-run completed where the step was {report.status}", player)
    rerun = context_hash(context_after(envelope, outcome.output))
    if rerun != committed.output_hash:
        return result(
            "diverged",
            f"the re-run's context hashes to {rerun[:16]}…, the step's to {(committed.output_hash or '')[:16]}…",
            player,
            rerun,
        )
    return result("same", f"context {rerun[:16]}…", player, rerun)


def _pinned_prompt(envelope: HandoffEnvelope, agent: str, ref: str) -> HandoffEnvelope:
    """``envelope`` with the agent's prompt pinned to the version the step rendered."""
    carried = envelope.overrides or StepOverrides()
    prompts = {**carried.prompts, agent: parse_ref(ref)[1]}
    return envelope.model_copy(update={"overrides": carried.model_copy(update={"prompts": prompts})})


class _Pinned:
    """The prompt source of a replay: the recorded version, from the prompt files."""

    def __init__(self, library: PromptLibrary, version: str) -> None:
        self.library = library
        self.version = version

    async def resolve(self, ref: str, *, agent: str | None = None, task_id: str | None = None) -> PromptTemplate:
        return self.library.load(parse_ref(ref)[0], self.version)


class _NoModel:
    """The model of a replay: never asked (the tape answers); a call reaching it is a bug, said loudly."""

    name = "replay"

    async def complete(self, request: ModelRequest) -> ModelReply:
        raise AssertionError("a replayed step called its model: the tape must answer every call")


class _ReplayGuard:
    """Grants every call, as the step's guard did; a call the guard refused then is refused again."""

    def __init__(self, player: Player) -> None:
        self.player = player

    async def start(self) -> None:
        return None

    async def before_model_call(self, index: int, model: str, prompt_tokens: int, prompt: str | None = None) -> Ticket:
        return Ticket(f"replay-{index}", "model_call", model, None, time.perf_counter())

    async def before_tool_call(
        self, index: int, spec: ToolSpec, args_hash: str, *, retry: bool = False
    ) -> Ticket | ToolCallError:
        refusal = self.player.refusal(spec.name, args_hash)
        if refusal is not None:
            return refusal
        return Ticket(f"replay-{index}", "tool_call", spec.name, args_hash, time.perf_counter())

    async def after_call(
        self,
        ticket: Ticket,
        outcome: str,
        error_type: str | None = None,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        return None


LiveOutcome = Literal["same", "changed", "failed"]


@dataclass(frozen=True)
class LiveRerun:
    """How one step run again for real compares with the recorded run."""

    step: str
    agent: str
    outcome: LiveOutcome
    detail: str
    output: dict[str, Any] | None = None
    #: JSON Patch from the recorded output to the new one (empty when the same).
    patch: list[dict[str, Any]] = field(default_factory=list)
    #: The calls of each run: ``kind name`` in order.
    recorded_calls: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    cost_usd: float = 0.0
    tokens: int = 0


async def rerun_live(
    agent: AgentSpec,
    provider: ModelProvider,
    tools: ToolRegistry,
    workflows: Mapping[str, WorkflowSpec],
    catalogue: ModelCatalogue,
    library: PromptLibrary,
    envelope: HandoffEnvelope,
    report: StepCompleted,
    *,
    prompt: str | None = None,
) -> LiveRerun:
    """Run ``report``'s step again for real from its handoff (prompt ``prompt``, else the recorded one)."""
    recording = report.recording
    recorded_calls = [_said(c) for c in recording.calls] if recording is not None else []
    ref = prompt or (recording.prompt if recording is not None else agent.prompt)
    tape = _DryRun(tools, recording.calls if recording is not None else [])

    def result(outcome: LiveOutcome, detail: str, **more: Any) -> LiveRerun:
        calls = [_said(c) for c in tape.calls]
        return LiveRerun(report.step, agent.name, outcome, detail, recorded_calls=recorded_calls, calls=calls, **more)

    try:
        library.load(*parse_ref(ref))
    except HandrailError as exc:
        return result("failed", f"prompt {ref}: {exc}")
    runner = StepRunner(
        agent,
        provider,
        tools,
        prompts=_Pinned(library, parse_ref(ref)[1]),
        workflows=workflows,
        models=catalogue,
        tapes=lambda _: tape,
    )
    try:
        outcome = await runner.run(_pinned_prompt(envelope, agent.name, ref), _OpenGuard())
    except HandrailError as exc:
        return result("failed", f"the step did not finish: {type(exc).__name__}: {exc}")
    if isinstance(outcome, Proposal):
        proposed = report.proposal if report.status == "awaiting_approval" else None
        if proposed is not None and outcome.call.idempotency_key == proposed.idempotency_key:
            return result("same", f"stopped for approval of {outcome.call.tool} again")
        return result("changed", f"stopped for approval of {outcome.call.tool} (arguments {outcome.call.arguments})")
    spent = {"cost_usd": round(outcome.usage.cost_usd, 6), "tokens": outcome.usage.tokens}
    step = next((s for s in _workflow_steps(workflows, envelope.workflow) if s.name == envelope.step), None)
    schema = step.output_schema if step is not None else None
    if schema:
        problems = sorted(jsonschema.Draft202012Validator(schema).iter_errors(outcome.output), key=str)
        if problems:
            where = "/".join(map(str, problems[0].absolute_path)) or "(root)"
            broken = f"its output breaks the step's schema at {where}: {problems[0].message}"
            return result("failed", broken, output=outcome.output, **spent)
    if report.status == "completed" and outcome.output == report.output:
        return result("same", "the same output", output=outcome.output, **spent)
    patch = diff(report.output, outcome.output) if report.status == "completed" else []
    detail = f"{len(patch)} change(s) to the output" if patch else f"completed where the step was {report.status}"
    return result("changed", detail, output=outcome.output, patch=patch, **spent)


def _workflow_steps(workflows: Mapping[str, WorkflowSpec], name: str) -> list[Any]:
    workflow = workflows.get(name)
    return list(workflow.steps) if workflow is not None else []


def _said(call: RecordedCall) -> str:
    return f"{call.kind} {call.name}"


class _DryRun(Recorder):
    """The live re-run's tape: the model and side-effect-free tools for real; a side-effecting tool never runs.

    It answers what the recorded step got from the very same call (same tool, same arguments), or
    fails (``invalid_input``: the model is told) saying it was not run.
    """

    def __init__(self, tools: ToolRegistry, recorded: list[RecordedCall]) -> None:
        super().__init__()
        self.tools = tools
        self.recorded = {(c.name, c.request_hash): c for c in recorded if c.kind == "tool" and c.reply is not None}

    async def tool(self, name: str, args_hash: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        tool = self.tools.get(name)
        if tool is None or not tool.spec.side_effect:
            return await super().tool(name, args_hash, run)
        seen = self.recorded.get((name, args_hash))

        async def dry() -> dict[str, Any]:
            if seen is None:
                raise ToolFailure(
                    f"{name} has a side effect and is not run on a replay; the recorded step made no such call"
                )
            return dict(seen.reply or {})

        return await super().tool(name, args_hash, dry)


class _OpenGuard(_ReplayGuard):
    """Grants every call of a live re-run (no budget: it is an operator's own run)."""

    def __init__(self) -> None:
        super().__init__(Player([]))
