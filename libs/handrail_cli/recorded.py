"""A task's recorded steps, as ``replay`` and ``golden`` re-run them: each step's audit record, the report
it sent (with its recording) and the handoff it ran on, read back from Kafka.

``for_task`` reads one task (only the partition its key maps to, per topic); ``for_workflow`` reads
whole topics once, for many tasks (``golden export``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from handrail.audit import AuditRecord
from handrail.audit.reader import read_key
from handrail.bus.broker import make_reader
from handrail.contracts import AgentSpec, Contracts
from handrail.llm import ModelProvider
from handrail.llm.factory import build_provider
from handrail.llm.models import ModelCatalogue
from handrail.messages import HandoffEnvelope, StepCompleted, StepOverrides
from handrail.prompts import PromptLibrary, parse_ref
from handrail.recovery.rebuild import read_topic
from handrail.tools import ToolRegistry
from handrail.topics import Topics
from handrail_cli.settings import CliSettings
from handrail_worker.replay import Committed, replay_step, rerun_live

M = TypeVar("M", bound=BaseModel)

#: The step records a replay re-runs (a step that failed or halted sent no recording: it is listed, not re-run).
STEP_ACTIONS = ("step.completed", "step.awaiting_approval", "step.failed", "step.halted")


class RecordedStep(BaseModel):
    """One step of a task as the record holds it; ``missing`` says why it cannot be re-run, if it cannot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: str
    agent: str
    action: str
    reason: str | None = None
    recording_hash: str | None = None
    output_hash: str | None = None
    envelope: HandoffEnvelope | None = None
    report: StepCompleted | None = None
    missing: str | None = None

    @property
    def committed(self) -> Committed:
        return Committed(self.recording_hash, self.output_hash, self.action)


@dataclass
class Source:
    """Where records are read back from; ``steps_topic`` may be a copy of ``<prefix>steps``."""

    settings: CliSettings
    topics: Topics
    bootstrap: str
    steps_topic: str

    async def for_task(self, task_id: str) -> tuple[list[AuditRecord], list[RecordedStep]]:
        """The task's audit records (log order) and its recorded steps (chain order)."""
        records = parsed(AuditRecord, await self._read_key(self.topics.audit, task_id))
        steps = step_records(records)
        reports = parsed(StepCompleted, await self._read_key(self.steps_topic, task_id))
        envelopes: list[HandoffEnvelope] = []
        for agent in sorted({r.actor.removeprefix("agent:") for r in steps}):
            envelopes += parsed(HandoffEnvelope, await self._read_key(self.topics.agent(agent), task_id))
        return records, recorded_steps(steps, reports, envelopes, self)

    async def for_workflow(self, workflow: str, agents: Iterable[str]) -> dict[str, tuple[list[AuditRecord], Any]]:
        """Every task of ``workflow`` on the audit topic: its records, and a function giving its recorded steps
        (the steps and agent topics are read once, for all of them)."""
        by_task: dict[str, list[AuditRecord]] = defaultdict(list)
        for record in parsed(AuditRecord, await self._read_all(self.topics.audit)):
            by_task[record.task_id].append(record)
        chosen = {t: rs for t, rs in by_task.items() if any(r.workflow == workflow for r in rs)}
        reports: dict[str, list[StepCompleted]] = defaultdict(list)
        for report in parsed(StepCompleted, await self._read_all(self.steps_topic)):
            if report.task_id in chosen:
                reports[report.task_id].append(report)
        envelopes: dict[str, list[HandoffEnvelope]] = defaultdict(list)
        for agent in sorted(set(agents)):
            for envelope in parsed(HandoffEnvelope, await self._read_all(self.topics.agent(agent))):
                if envelope.task_id in chosen:
                    envelopes[envelope.task_id].append(envelope)

        def steps_of(task_id: str) -> list[RecordedStep]:
            steps = step_records(chosen[task_id])
            return recorded_steps(steps, reports[task_id], envelopes[task_id], self)

        return {t: (rs, steps_of) for t, rs in chosen.items()}

    async def _read_key(self, topic: str, key: str) -> list[bytes]:
        found = await read_key(self.bootstrap, topic, key, self.settings.kafka_credentials())
        return [value for _, _, value in found]

    async def _read_all(self, topic: str) -> list[bytes]:
        reader = make_reader(self.bootstrap, "handrail-golden-export", self.settings.kafka_credentials())
        await reader.start()
        try:
            return [record.value or b"" async for record in read_topic(reader, topic)]
        finally:
            await reader.stop()


def step_records(records: list[AuditRecord]) -> list[AuditRecord]:
    """The task's step records, each once (a record published twice is one), in chain order."""
    steps = list({r.message_id: r for r in records if r.action in STEP_ACTIONS}.values())
    return sorted(steps, key=lambda r: r.seq)


def recorded_steps(
    steps: list[AuditRecord], reports: list[StepCompleted], envelopes: list[HandoffEnvelope], source: Source
) -> list[RecordedStep]:
    by_id: dict[str, list[StepCompleted]] = defaultdict(list)
    for report in reports:
        by_id[report.message_id].append(report)
    handoffs: dict[str, HandoffEnvelope] = {}
    for envelope in envelopes:
        handoffs.setdefault(envelope.message_id, envelope)
    return [_recorded(record, by_id, handoffs, source) for record in steps]


def _recorded(
    record: AuditRecord,
    reports: dict[str, list[StepCompleted]],
    handoffs: dict[str, HandoffEnvelope],
    source: Source,
) -> RecordedStep:
    recorded = record.details.get("recording")
    found = RecordedStep(
        step=record.step or "?",
        agent=record.actor.removeprefix("agent:"),
        action=record.action,
        reason=record.reason,
        recording_hash=recorded.get("hash") if isinstance(recorded, dict) else None,
        output_hash=record.output_hash,
    )
    if record.action in ("step.failed", "step.halted"):
        why = f"the step {record.action.removeprefix('step.')}: {record.reason or 'no reason given'}"
        return found.model_copy(update={"missing": why})
    candidates = reports.get(record.source_id or "", [])
    if not candidates:
        why = f"its report {record.source_id} is not on {source.steps_topic} (past its retention?)"
        return found.model_copy(update={"missing": why})
    # A redelivered step reports again under the same id; the trail committed to one of them.
    report = next(
        (r for r in candidates if r.recording is not None and r.recording.content_hash() == found.recording_hash),
        candidates[0],
    )
    handoff = record.details.get("handoff")
    handoff_id = handoff.get("message_id") if isinstance(handoff, dict) else None
    envelope = handoffs.get(handoff_id or "")
    if envelope is None:
        topic = source.topics.agent(found.agent)
        why = f"the handoff it ran on ({handoff_id}) is not on {topic} (past its retention?)"
        return found.model_copy(update={"report": report, "missing": why})
    return found.model_copy(update={"report": report, "envelope": envelope})


def parsed(model: type[M], values: list[bytes]) -> list[M]:
    """Each value that reads as ``model``; the others are not ours to judge (their consumers dead-lettered them)."""
    out: list[M] = []
    for value in values:
        try:
            out.append(model.model_validate_json(value))
        except ValidationError:
            continue
    return out


@dataclass
class Rerunner:
    """Re-runs recorded steps: from their recordings (``live`` False, and no override for the step's agent),
    or for real (``handrail_worker.replay.rerun_live``) with the ``overrides``' prompt version or model."""

    contracts: Contracts
    tools: ToolRegistry
    catalogue: ModelCatalogue
    library: PromptLibrary
    live: bool = False
    overrides: StepOverrides | None = None

    def __post_init__(self) -> None:
        self._providers: dict[str, ModelProvider] = {}

    async def run(self, step: RecordedStep) -> dict[str, Any]:
        """What the re-run said, as a row: step, agent, mode, outcome, detail and the mode's figures."""
        row: dict[str, Any] = {"step": step.step, "agent": step.agent}
        agent = self.contracts.agents.get(step.agent)
        if step.missing is not None or step.envelope is None or step.report is None:
            return {**row, "mode": "recorded", "outcome": "not_rerun", "detail": step.missing}
        if agent is None:
            return {**row, "mode": "recorded", "outcome": "not_rerun", "detail": "its agent is not in agents.yaml"}
        overrides = self.overrides
        prompt = overrides.prompts.get(agent.name) if overrides is not None else None
        model = overrides.models.get(agent.name) if overrides is not None else None
        if not self.live and prompt is None and model is None:
            replayed = await replay_step(
                agent, self.tools, self.contracts.workflows, self.catalogue, self.library, step.envelope,
                step.report, step.committed,
            )  # fmt: skip
            return {
                **row, "mode": "recorded", "outcome": replayed.outcome, "detail": replayed.detail,
                "played": replayed.played, "recorded": replayed.recorded, "context_hash": replayed.context_hash,
            }  # fmt: skip
        ref = f"{parse_ref(agent.prompt)[0]}@{prompt}" if prompt is not None else None
        live = await rerun_live(
            agent, self._provider(agent, model), self.tools, self.contracts.workflows, self.catalogue, self.library,
            step.envelope, step.report, prompt=ref,
        )  # fmt: skip
        return {
            **row, "mode": "live", "outcome": live.outcome, "detail": live.detail, "patch": live.patch,
            "recorded_calls": live.recorded_calls, "calls": live.calls, "cost_usd": live.cost_usd,
            "tokens": live.tokens, "prompt": ref, "model": model,
        }  # fmt: skip

    def _provider(self, agent: AgentSpec, model: str | None) -> ModelProvider:
        key = f"{agent.name}={model or ''}"
        if key not in self._providers:
            spec = agent if model is None else agent.model_copy(update={"model_chain": [model]})
            self._providers[key] = build_provider(spec, self.catalogue)
        return self._providers[key]

    async def close(self) -> None:
        """Close the live runs' model connections."""
        for provider in self._providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
