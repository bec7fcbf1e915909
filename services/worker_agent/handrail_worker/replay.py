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
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from handrail.contracts import AgentSpec, WorkflowSpec
from handrail.errors import HandrailError, TaskHalted
from handrail.hashing import context_hash
from handrail.lifecycle import context_after
from handrail.llm import ModelReply, ModelRequest
from handrail.llm.models import ModelCatalogue
from handrail.messages import HandoffEnvelope, StepCompleted, StepOverrides
from handrail.prompts import PromptLibrary, PromptTemplate, parse_ref
from handrail.tools import ToolCallError, ToolRegistry, ToolSpec
from handrail_worker.guard import Ticket
from handrail_worker.runner import Proposal, StepRunner
from handrail_worker.tape import Diverged, Player

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

    async def resolve(self, ref: str) -> PromptTemplate:
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

    async def before_model_call(self, index: int, model: str, prompt_tokens: int) -> Ticket:
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
