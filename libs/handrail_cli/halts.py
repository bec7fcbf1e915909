"""``handrail halt`` / ``handrail resume``: stop a task or a whole agent within one call, and lift it."""

from __future__ import annotations

import getpass

import typer

from handrail.audit import AuditLog
from handrail.bus.broker import make_broker
from handrail.bus.publisher import Publisher
from handrail.messages import ControlRecord, new_message_id, utcnow
from handrail.state.controls import ControlStore
from handrail.topics import Topics
from handrail_cli.common import console, run
from handrail_cli.settings import CliSettings


def _target(task_id: str | None, agent: str | None) -> tuple[str, str]:
    if (task_id is None) == (agent is None):
        raise typer.BadParameter("give exactly one of TASK or --agent NAME")
    return ("task", task_id) if task_id is not None else ("agent", agent)  # type: ignore[return-value]


async def apply_halt(scope: str, name: str, state: str, reason: str) -> None:
    """Halt or lift (``state``: halted | resumed) a task or an agent: in Redis, on the control topic, audited."""
    settings = CliSettings()
    redis = settings.redis_client()
    operator = f"operator:{getpass.getuser()}"
    broker = make_broker(settings.kafka_bootstrap, client_id="handrail-cli", credentials=settings.kafka_credentials())
    await broker.connect()
    try:
        controls = ControlStore(redis, settings.redis_prefix)
        if state == "halted":
            await controls.halt(scope, name, reason, operator)
        else:
            await controls.resume(scope, name)
        record = ControlRecord(
            message_id=new_message_id(),
            kind="halt",
            scope=scope,
            name=name,
            state=state,
            reason=reason,
            by=operator,
            at=utcnow(),
        )
        topics = Topics(settings.topic_prefix)
        publisher = Publisher(broker, settings.operator_signer())
        await publisher.publish(topics.control, record, key=record.key)
        if scope == "task":
            audit = AuditLog(redis, publisher, topics.audit, settings.redis_prefix)
            await audit.record(
                name, dedupe_key=record.message_id, actor=operator, action=f"halt.{state}", reason=reason
            )
    finally:
        await broker.stop()
        await redis.aclose()


def halt(
    task_id: str = typer.Argument(None, help="The task to halt."),
    agent: str = typer.Option(None, "--agent", help="Halt every task of this agent instead."),
    reason: str = typer.Option("halted by an operator", "--reason", help="Recorded on the halt and the audit trail."),
) -> None:
    """Halt a task or an agent: workers stop it before its next call."""
    scope, name = _target(task_id, agent)
    run(apply_halt(scope, name, "halted", reason))
    console.print(f"halted {scope} {name}")


def resume(
    task_id: str = typer.Argument(None, help="The task to resume."),
    agent: str = typer.Option(None, "--agent", help="Resume this agent instead."),
) -> None:
    """Lift a halt on a task or an agent."""
    scope, name = _target(task_id, agent)
    run(apply_halt(scope, name, "resumed", "resumed by an operator"))
    console.print(f"resumed {scope} {name}")
