"""``handrail dlq replay``: send dead letters' originals back to where they came from, once fixed.

Each replay is safe to repeat, and to cut short at any point (``handrail_cli.dlq_plan`` says
why): the consumer it goes to skips a message it has processed, a task opens once and ends
with one result. What is replayed, and by whom and why, is recorded on the task's audit trail
*before* it is sent, as every decision there is: a replay cut short between the two is on the
trail without having been sent, and running it again sends it (and records that run too).
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import typer
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from handrail.audit import AuditLog
from handrail.bus.broker import make_broker
from handrail.bus.publisher import TYPE_HEADER, Publisher
from handrail.client import open_reader, read_to_end
from handrail.errors import HandrailError
from handrail.messages import DeadLetter, new_message_id, utcnow
from handrail.state import TaskStore
from handrail.state.tasks import FINISHED_TTL_S
from handrail.topics import Topics
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.dlq_plan import Item, Outcome, duplicate_of, plan
from handrail_cli.dlq_select import Selection
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings

#: Headers on a replayed message: which dead letter it is, and which replay (its audit record's source).
REPLAY_OF_HEADER = "handrail-replay-of"
REPLAY_ID_HEADER = "handrail-replay-id"
#: The audit action of a replay.
REPLAYED = "dead_letter.replayed"
#: A finished task is forgotten FINISHED_TTL_S after it ended; a day less leaves room for a task that
#: ended a little before its message was dead-lettered. Past that, whether it ended cannot be told.
MAX_AGE = timedelta(seconds=FINISHED_TTL_S) - timedelta(days=1)

IdsArgument = typer.Argument(None, metavar="[ID]...", help="Dead letter ids (from `dlq list`), or their starts.")


def _operator() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator:unknown"


async def _read(settings: CliSettings, since: datetime | None) -> list[DeadLetter]:
    """The dead letters from ``since`` (the start of the topic when None); records that are not one are left."""
    from_ms = int(since.timestamp() * 1000) if since is not None else 0
    reader = await open_reader(
        settings.kafka_bootstrap, [Topics(settings.topic_prefix).dlq], from_ms, settings.kafka_credentials()
    )
    letters: list[DeadLetter] = []
    try:
        async for record in read_to_end(reader):
            try:
                letters.append(DeadLetter.model_validate_json(record.value or b""))
            except ValidationError:
                continue  # not ours: `dlq list` counts them
    finally:
        await reader.stop()
    return letters


async def _checked(item: Item, duplicates: dict[str, str], store: TaskStore, now: datetime) -> Item:
    """``item`` as it stands against the run and its task: skipped when sent already in this run or when its
    task ended, refused when too old to tell."""
    letter = item.letter
    if item.outcome != Outcome.WOULD_REPLAY:
        return item
    if letter.message_id in duplicates:
        return item.with_outcome(
            Outcome.SKIPPED, f"the same message to the same topic as {duplicates[letter.message_id]}"
        )
    if now - letter.dead_lettered_at > MAX_AGE:
        return item.with_outcome(
            Outcome.REFUSED,
            f"dead-lettered more than {MAX_AGE.days} days ago: a finished task is remembered"
            f" {FINISHED_TTL_S // 86400} days, so whether task {letter.task_id} ended cannot be told"
            " and a replay could run it twice; submit it again under a new task id",
        )
    record = await store.get(letter.task_id or "")
    status = record.get("status")
    if status and status != "running":
        return item.with_outcome(
            Outcome.SKIPPED,
            f"task {letter.task_id} already ended {status} (result {record.get('result_id') or '?'}):"
            " a replay would do nothing; submit it again under a new task id to run it again",
        )
    return item


async def _replay(
    settings: CliSettings, selection: Selection, reason: str, dry_run: bool, limit: int, emit: Callable[[Item], None]
) -> tuple[list[Item], int]:
    """Plan, check and (unless ``dry_run``) send each selected dead letter, emitting each as it is done (so
    what went out before a failure is printed); return them, and how many were left over."""
    topics = Topics(settings.topic_prefix)
    chosen = selection.pick(await _read(settings, selection.since))
    items = [plan(letter, topics) for letter in chosen]
    duplicates = duplicate_of(items)
    redis = settings.redis_client()
    broker = make_broker(settings.kafka_bootstrap, client_id="handrail-cli", credentials=settings.kafka_credentials())
    await broker.connect()
    done: list[Item] = []
    sent = 0
    try:
        store = TaskStore(redis, settings.redis_prefix)
        audit = AuditLog(redis, Publisher(broker, settings.operator_signer()), topics.audit, settings.redis_prefix)
        now, operator = utcnow(), _operator()
        for planned in items:
            item = await _checked(planned, duplicates, store, now)
            if item.outcome == Outcome.WOULD_REPLAY:
                if sent >= limit:
                    continue
                sent += 1
                if not dry_run:
                    await _send(broker, audit, item, operator, reason)
                    item = item.with_outcome(Outcome.REPLAYED)
            emit(item)
            done.append(item)
    finally:
        await broker.stop()
        await redis.aclose()
    return done, len(items) - len(done)


async def _send(broker: KafkaBroker, audit: AuditLog, item: Item, operator: str, reason: str) -> None:
    """Record the replay on the task's audit trail, then send the original (in that order: see above)."""
    letter = item.letter
    assert item.topic is not None
    assert letter.task_id is not None
    assert item.payload_type is not None
    replay_id = new_message_id()  # each run is a replay of its own, by whoever ran it, for their reason
    await audit.record(
        letter.task_id,
        dedupe_key=replay_id,
        actor=operator,
        action=REPLAYED,
        reason=reason,
        details={
            "dead_letter_id": letter.message_id,
            "error_type": letter.error_type,
            "source": f"{letter.source_topic}:{letter.partition}:{letter.offset}",
            "to_topic": item.topic,
            "message_id": item.message_id,
            "replay_id": replay_id,
        },
    )
    headers = {TYPE_HEADER: item.payload_type, REPLAY_OF_HEADER: letter.message_id, REPLAY_ID_HEADER: replay_id}
    try:
        await broker.publish(item.original, item.topic, key=letter.task_id.encode(), headers=headers)
    except KafkaError as exc:
        raise HandrailError(
            f"the replay of dead letter {letter.message_id} is on task {letter.task_id}'s audit trail, but Kafka"
            f" did not take it: {type(exc).__name__}: {exc} (replays run as a principal that may write"
            f" {item.topic}: handrail-replayer); it and the rest were not sent"
        ) from None


def _line(item: Item) -> str:
    letter = item.letter
    what = f"{item.outcome.value.replace('_', ' '):12} {letter.message_id}  task {letter.task_id or '-'}"
    if item.outcome in (Outcome.REPLAYED, Outcome.WOULD_REPLAY):
        return f"{what}  {letter.error_type} -> {item.topic} ({len(item.original)} bytes, id {item.message_id or '-'})"
    return f"{what}  {letter.error_type}: {item.why}"


def replay(
    ids: list[str] = IdsArgument,
    reason: str = typer.Option(..., "--reason", help="Why they are replayed: recorded on each task's audit trail."),
    error_type: str = typer.Option(None, "--error-type", help="Only dead letters of this error type (e.g. poison)."),
    reason_contains: str = typer.Option(None, "--reason-contains", help="Only those whose reason contains this."),
    source_topic: str = typer.Option(
        None, "--source-topic", help="Only those from this topic (with or without the topic prefix: agent.intake)."
    ),
    task_id: str = typer.Option(None, "--task", help="Only this task's."),
    since: str = typer.Option(None, "--since", help="Dead-lettered at or after: ISO-8601, or a time ago (2h, 3d)."),
    until: str = typer.Option(None, "--until", help="Dead-lettered at or before: ISO-8601, or a time ago."),
    limit: int = typer.Option(100, "--limit", min=1, help="Send at most this many (the oldest first)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be sent; send and record nothing."),
    as_json: bool = JsonOption,
) -> None:
    """Replay dead letters: each original goes back to the topic it came from, keyed by its task.

    Safe to repeat: a message already processed, or whose task ended, does nothing (one task, one result).

    A message still malformed is dead-lettered again with the same reason. Exit 1 when any was refused.
    """
    if not reason.strip():
        raise typer.BadParameter("say why they are replayed: it goes on the audit trail", param_hint="--reason")
    settings = CliSettings()
    if source_topic is not None and not source_topic.startswith(settings.topic_prefix):
        source_topic = settings.topic_prefix + source_topic
    selection = Selection.parse(
        _given(ids),
        error_type=error_type,
        reason_contains=reason_contains,
        source_topic=source_topic,
        task_id=task_id,
        since=since,
        until=until,
        now=utcnow(),
    )

    def emit(item: Item) -> None:
        if as_json:
            print_json_lines([item.as_json()])
        else:
            console.print(_line(item), highlight=False, markup=False)

    items, left = run(_replay(settings, selection, reason, dry_run, limit, emit))
    counts = {o: sum(1 for i in items if i.outcome == o) for o in Outcome}
    summary = ", ".join(f"{n} {o.value.replace('_', ' ')}" for o, n in counts.items() if n) or "no dead letter matched"
    if left:
        summary += f"; {left} more to send beyond --limit {limit}"
    (err_console if as_json else console).print(summary, highlight=False)
    if counts[Outcome.REFUSED]:
        raise typer.Exit(ExitCode.FAILED)


def _given(ids: Sequence[str] | None) -> list[str]:
    return list(ids or [])
