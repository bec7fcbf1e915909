"""``handrail replay TASK``: re-run a task's steps offline from their recordings, and show they did the same.

For every step on the task's audit trail, the step's report is read back from ``<prefix>steps``
(its recording: each model reply and tool answer it got) and the handoff it ran on from the
agent's topic; the worker's runner runs the step again with those answers played back
(``handrail_worker.replay``): no model, no tool, nothing written anywhere. A step is ``same``
when it made exactly the recorded calls and led to the context hash the trail committed;
``diverged`` says at which call and how; ``tampered`` when its recording no longer hashes to
what the trail holds. The trail's own hash chain is checked first (signatures are
``handrail audit verify``'s).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import typer
from pydantic import ValidationError

from handrail.audit import AuditRecord, verify_chain
from handrail.audit.reader import read_key
from handrail.contracts import Contracts, load_contracts
from handrail.errors import ContractError
from handrail.llm.models import ModelCatalogue, load_catalogue
from handrail.messages import HandoffEnvelope, StepCompleted
from handrail.prompts import PromptLibrary
from handrail.tools import ToolRegistry, default_registry
from handrail.topics import Topics
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings
from handrail_worker.replay import Committed, StepReplay, replay_step

#: The step records a replay re-runs (a step that failed or halted sent no recording: it is listed, not re-run).
_STEP_ACTIONS = ("step.completed", "step.awaiting_approval", "step.failed", "step.halted")


def replay(
    task_id: str = typer.Argument(..., help="The task whose steps to re-run (its full id)."),
    steps_topic: str = typer.Option(
        None, "--steps-topic", help="Read the step reports from this topic instead of <prefix>steps (e.g. a copy)."
    ),
    as_json: bool = JsonOption,
    bootstrap: str = typer.Option(
        None, "--bootstrap", help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."
    ),
) -> None:
    """Re-run every step of the task from its recorded model replies and tool results (calling no model or
    tool) and say, per step: same (the same calls, the same context hash), diverged (where, and how),
    tampered (its recording does not hash to what the audit trail committed), or not re-run (why).

    Exit codes: 0 every re-run step did the same, 1 a step diverged or was tampered with, or the audit
    chain is broken, 2 configuration that does not load, 4 no audit records for the task.
    """
    settings = CliSettings()
    try:
        tools = default_registry()  # replayed tools are never run: where they keep files does not matter
        contracts = load_contracts(settings.config_dir, tools.names())
        catalogue = load_catalogue(settings.config_dir)
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(ExitCode.USAGE) from None
    topics = Topics(settings.topic_prefix)
    source = _Source(settings, topics, bootstrap or settings.kafka_bootstrap, steps_topic or topics.steps)
    library = PromptLibrary(settings.config_dir / "prompts")
    chain, replays = run(_replay_task(task_id, source, contracts, tools, catalogue, library))
    if chain is None:
        (err_console if as_json else console).print(f"no audit records for task {task_id} on {topics.audit}")
        raise typer.Exit(ExitCode.NOT_FOUND)
    rows = [_row(r) for r in replays]
    bad = [r for r in replays if r.outcome in ("diverged", "tampered")]
    if as_json:
        print_json_lines([{"task_id": task_id, "chain": chain, **row} for row in rows])
    else:
        console.print(f"task {task_id}: audit chain {chain}", highlight=False)
        for row in rows:
            console.print(
                f"  {row['step']:<14} {row['agent']:<20} {row['outcome']:<9} {row['detail']}", highlight=False
            )
        rerun = [r for r in replays if r.outcome != "not_rerun"]
        verdict = f"{len(bad)} of {len(rerun)} did not" if bad else f"all {len(rerun)} did the same"
        console.print(f"{len(rerun)} of {len(replays)} steps re-run from their recordings: {verdict}", highlight=False)
    if bad or not chain.startswith("intact"):
        raise typer.Exit(ExitCode.FAILED)


class _Source:
    """Where the task's records are read back from (each topic once)."""

    def __init__(self, settings: CliSettings, topics: Topics, bootstrap: str, steps_topic: str) -> None:
        self.settings, self.topics, self.bootstrap, self.steps_topic = settings, topics, bootstrap, steps_topic

    async def read(self, topic: str, task_id: str) -> list[bytes]:
        return [
            value for _, _, value in await read_key(self.bootstrap, topic, task_id, self.settings.kafka_credentials())
        ]


async def _replay_task(
    task_id: str,
    source: _Source,
    contracts: Contracts,
    tools: ToolRegistry,
    catalogue: ModelCatalogue,
    library: PromptLibrary,
) -> tuple[str | None, list[StepReplay]]:
    records = _parsed(AuditRecord, await source.read(source.topics.audit, task_id))
    if not records:
        return None, []
    chain = verify_chain([(None, r) for r in records]).describe()
    steps = list({r.message_id: r for r in records if r.action in _STEP_ACTIONS}.values())
    steps.sort(key=lambda r: r.seq)
    reports: dict[str, list[StepCompleted]] = defaultdict(list)
    for report in _parsed(StepCompleted, await source.read(source.steps_topic, task_id)):
        reports[report.message_id].append(report)
    envelopes: dict[str, HandoffEnvelope] = {}
    for agent in sorted({r.actor.removeprefix("agent:") for r in steps}):
        for envelope in _parsed(HandoffEnvelope, await source.read(source.topics.agent(agent), task_id)):
            envelopes.setdefault(envelope.message_id, envelope)
    out = []
    for record in steps:
        out.append(await _replay_one(record, reports, envelopes, source, contracts, tools, catalogue, library))
    return chain, out


async def _replay_one(
    record: AuditRecord,
    reports: dict[str, list[StepCompleted]],
    envelopes: dict[str, HandoffEnvelope],
    source: _Source,
    contracts: Contracts,
    tools: ToolRegistry,
    catalogue: ModelCatalogue,
    library: PromptLibrary,
) -> StepReplay:
    agent_name = record.actor.removeprefix("agent:")
    step = record.step or "?"

    def not_rerun(why: str) -> StepReplay:
        return StepReplay(step, agent_name, "not_rerun", why)

    if record.action in ("step.failed", "step.halted"):
        return not_rerun(f"the step {record.action.removeprefix('step.')}: {record.reason or 'no reason given'}")
    recorded = record.details.get("recording")
    committed = Committed(
        recorded.get("hash") if isinstance(recorded, dict) else None, record.output_hash, record.action
    )
    candidates = reports.get(record.source_id or "", [])
    if not candidates:
        return not_rerun(f"its report {record.source_id} is not on {source.steps_topic} (past its retention?)")
    # A redelivered step reports again under the same id; the trail committed to one of them.
    report = next(
        (r for r in candidates if r.recording is not None and r.recording.content_hash() == committed.recording_hash),
        candidates[0],
    )
    handoff = record.details.get("handoff")
    handoff_id = handoff.get("message_id") if isinstance(handoff, dict) else None
    envelope = envelopes.get(handoff_id or "")
    if envelope is None:
        topic = source.topics.agent(agent_name)
        return not_rerun(f"the handoff it ran on ({handoff_id}) is not on {topic} (past its retention?)")
    agent = contracts.agents.get(agent_name)
    if agent is None:
        return not_rerun(f"agent {agent_name!r} is not in agents.yaml any more")
    return await replay_step(agent, tools, contracts.workflows, catalogue, library, envelope, report, committed)


def _parsed(model: Any, values: list[bytes]) -> list[Any]:
    """Each value that reads as ``model``; the others are not ours to judge (their consumers dead-lettered them)."""
    parsed = []
    for value in values:
        try:
            parsed.append(model.model_validate_json(value))
        except ValidationError:
            continue
    return parsed


def _row(replayed: StepReplay) -> dict[str, Any]:
    return {
        "step": replayed.step,
        "agent": replayed.agent,
        "outcome": replayed.outcome,
        "detail": replayed.detail,
        "played": replayed.played,
        "recorded": replayed.recorded,
        "context_hash": replayed.context_hash,
    }
