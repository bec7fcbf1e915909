"""``handrail autonomy status|set|clear``: each agent's autonomy per workflow, its track record, and changing it.

``status`` reads the levels from Redis (what every step sees) and counts the
reviews from the record: ``reviews.requested`` and ``reviews.decided`` read from
the start, judged by ``config/autonomy.yaml``. ``set`` and ``clear`` are audited
(chain ``autonomy/<agent>/<workflow>``: ``handrail trace`` it) and recorded on
the control topic; every process sees the change within a few seconds.
"""

from __future__ import annotations

import getpass
from typing import Any

import typer
from rich.table import Table

from handrail.audit import AuditLog
from handrail.autonomy import (
    Assessment,
    AutonomyChanged,
    AutonomyLevels,
    Outcome,
    Recorder,
    Tally,
    Unchanged,
    UnknownTarget,
    assess,
)
from handrail.autonomy.levels import DEFAULT_TTL_S
from handrail.bus.broker import make_broker, make_reader
from handrail.bus.publisher import Publisher
from handrail.contracts import Autonomy, Contracts, load_contracts
from handrail.errors import ContractError
from handrail.recovery.rebuild import read_topic
from handrail.tools import default_registry
from handrail.topics import Topics
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings

app = typer.Typer(no_args_is_help=True, help="Autonomy levels per agent and workflow: measured, recommended, set.")

AgentArg = typer.Argument(..., help="The agent (agents.yaml).")
WorkflowArg = typer.Argument(..., help="A workflow the agent runs a step of (workflows.yaml).")
LevelArg = typer.Argument(..., help="The level from now on.", case_sensitive=False)
ReasonOption = typer.Option(..., "--reason", help="Why: recorded on the change and in the audit trail.")


def _contracts(settings: CliSettings) -> Contracts:
    try:
        return load_contracts(settings.config_dir, default_registry().names())
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None


def _operator() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator:unknown"


@app.command("status")
def status(
    agent: str = typer.Option(None, "--agent", help="Only this agent."),
    workflow: str = typer.Option(None, "--workflow", help="Only this workflow."),
    as_json: bool = JsonOption,
) -> None:
    """Each agent x workflow: level and source, reviews counted, how they ended, and what the rule recommends."""
    settings = CliSettings()
    contracts = _contracts(settings)
    pairs = [(a, w) for a, w in contracts.agent_workflows() if agent in (None, a) and workflow in (None, w)]
    if not pairs:
        err_console.print("[red]error:[/red] no agent runs a step of such a workflow (see agents.yaml, workflows.yaml)")
        raise typer.Exit(ExitCode.USAGE)
    assessments = run(_assess(settings, contracts, pairs))
    if as_json:
        print_json_lines(_as_json(found) for found in assessments)
        return
    rule = contracts.graduation
    if rule is None:
        console.print("rule: none (no config/autonomy.yaml): nothing is recommended", highlight=False)
    else:
        mode = "applied by the human-review service" if rule.auto else "recommend only"
        console.print(f"rule: {rule.source} (auto: {str(rule.auto).lower()}: {mode})", highlight=False)
    table = Table("agent", "workflow", "level", "since", "reviews", "unchanged / edited / rejected / timed out", "rule")
    for found in assessments:
        effective, counts, advice = found.effective, found.counts, found.recommendation
        since = effective.since.strftime("%Y-%m-%d %H:%M") if effective.since else "-"
        shown = advice.action if not advice.changes else f"{advice.action} to {advice.level.value}"
        table.add_row(
            effective.agent,
            effective.workflow,
            f"{effective.level.value} ({effective.source})",
            since,
            str(counts.reviews),
            " / ".join(f"{counts.ratio(o) * 100:.1f}%" for o in Outcome),
            f"{shown}: {advice.why}",
        )
    console.print(table)


async def _assess(settings: CliSettings, contracts: Contracts, pairs: list[tuple[str, str]]) -> list[Assessment]:
    redis = settings.redis_client()
    try:
        levels = AutonomyLevels(redis, settings.redis_prefix, contracts)
        current = [await levels.current(a, w) for a, w in pairs]
    finally:
        await redis.aclose()
    tally = Tally()
    topics = Topics(settings.topic_prefix)
    reader = make_reader(settings.kafka_bootstrap, "handrail-cli-autonomy", settings.kafka_credentials())
    await reader.start()
    try:
        for kind, topic in (("requested", topics.reviews_requested), ("decided", topics.reviews_decided)):
            async for record in read_topic(reader, topic):
                tally.take(kind, record.value or b"")
    finally:
        await reader.stop()
    return [assess(effective, tally, contracts.graduation) for effective in current]


def _as_json(found: Assessment) -> dict[str, Any]:
    effective, counts, advice = found.effective, found.counts, found.recommendation
    return {
        "agent": effective.agent,
        "workflow": effective.workflow,
        "level": effective.level.value,
        "source": effective.source,
        "configured": effective.configured.value,
        "since": effective.since.isoformat() if effective.since else None,
        "revision": effective.revision,
        "reviews": counts.reviews,
        "counts": {o.value: counts.count(o) for o in Outcome},
        "ratios": {o.value: round(counts.ratio(o), 4) for o in Outcome},
        "recommendation": {"action": advice.action, "level": advice.level.value, "why": advice.why},
    }


@app.command("set")
def set_(
    agent: str = AgentArg,
    workflow: str = WorkflowArg,
    level: Autonomy = LevelArg,
    reason: str = ReasonOption,
) -> None:
    """Override AGENT's level in WORKFLOW (audited; `set` it back, or `clear` it, to undo)."""
    _change(agent, workflow, level, reason)


@app.command("clear")
def clear(agent: str = AgentArg, workflow: str = WorkflowArg, reason: str = ReasonOption) -> None:
    """Drop AGENT's override in WORKFLOW: the level of agents.yaml applies again (audited)."""
    _change(agent, workflow, None, reason)


def _change(agent: str, workflow: str, level: Autonomy | None, reason: str) -> None:
    settings = CliSettings()
    contracts = _contracts(settings)
    if not reason.strip():
        raise typer.BadParameter("say why", param_hint="--reason")
    redis = settings.redis_client()
    levels = AutonomyLevels(redis, settings.redis_prefix, contracts)
    try:
        levels.check(agent, workflow)
    except UnknownTarget as exc:
        run(redis.aclose())
        raise typer.BadParameter(str(exc), param_hint="AGENT / WORKFLOW") from None

    async def go() -> AutonomyChanged | str:
        topics = Topics(settings.topic_prefix)
        broker = make_broker(
            settings.kafka_bootstrap, client_id="handrail-cli", credentials=settings.kafka_credentials()
        )
        try:
            await broker.connect()
            publisher = Publisher(broker, settings.operator_signer())
            recorder = Recorder(
                publisher, topics.control, AuditLog(redis, publisher, topics.audit, settings.redis_prefix)
            )
            try:
                return await levels.set(agent, workflow, level, by=_operator(), reason=reason, recorder=recorder)
            except Unchanged as exc:
                return str(exc)
        finally:
            await broker.stop()
            await redis.aclose()

    done = run(go())
    if isinstance(done, str):
        console.print(f"unchanged: {done}", highlight=False)
        return
    to = f"{done.level.value} (override)" if done.level is not None else f"{done.configured.value} (config)"
    console.print(
        f"{agent} in {workflow}: {done.previous.value} -> {to}, revision {done.revision}; "
        f"audited as {done.key}; every process applies it within {DEFAULT_TTL_S:g}s",
        highlight=False,
    )
