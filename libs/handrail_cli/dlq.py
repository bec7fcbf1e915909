"""``handrail dlq list`` and ``handrail dlq show ID``: what was dead-lettered, and why (``replay``: ``dlq_replay``)."""

from __future__ import annotations

import base64
import time

import typer
from pydantic import ValidationError
from rich.table import Column, Table

from handrail.client import open_reader, read_to_end
from handrail.messages import DeadLetter
from handrail.topics import Topics
from handrail_cli import dlq_replay
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, resolve_prefix, run
from handrail_cli.settings import CliSettings

app = typer.Typer(no_args_is_help=True, help="Read the dead-letter queue, and replay from it.")
app.command("replay")(dlq_replay.replay)

SinceOption = typer.Option(86400.0, "--since-s", min=0, help="How far back to look.")
BootstrapOption = typer.Option(None, help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP).")


def _read(bootstrap: str | None, since_s: float) -> tuple[list[DeadLetter], int]:
    """Every dead letter of the last ``since_s``, oldest first, and how many records were not one."""
    settings = CliSettings()

    async def go() -> tuple[list[DeadLetter], int]:
        reader = await open_reader(
            bootstrap or settings.kafka_bootstrap,
            [Topics(settings.topic_prefix).dlq],
            int((time.time() - since_s) * 1000),
            settings.kafka_credentials(),
        )
        letters: list[DeadLetter] = []
        unreadable = 0
        try:
            async for record in read_to_end(reader):
                try:
                    letters.append(DeadLetter.model_validate_json(record.value or b""))
                except ValidationError:
                    unreadable += 1  # not ours (someone else wrote to the topic): counted, not a crash
        finally:
            await reader.stop()
        return sorted(letters, key=lambda letter: letter.dead_lettered_at), unreadable

    return run(go())


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@app.command("list")
def list_(
    since_s: float = SinceOption,
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many (the newest)."),
    as_json: bool = JsonOption,
    bootstrap: str = BootstrapOption,
) -> None:
    """List dead letters: id, reason, error type, where they came from; and how many there are in all."""
    letters, unreadable = _read(bootstrap, since_s)
    shown = letters[-limit:]
    total = len(letters)
    summary = (
        f"{_plural(total, 'dead letter')}" if len(shown) == total else f"showing the newest {len(shown)} of {total}"
    )
    summary += f" in the last {since_s:g}s" + (
        f"; {_plural(unreadable, 'unreadable record')} skipped" if unreadable else ""
    )
    if as_json:
        print_json_lines(letter.model_dump(mode="json") for letter in shown)
        err_console.print(summary, highlight=False)
        return
    # Ids in full, never elided: they are what `dlq show` takes (a unique prefix will do too).
    id_width = max((len(letter.message_id) for letter in shown), default=2)
    table = Table(Column("id", no_wrap=True, min_width=id_width), "when", "task", "error type", "from", "reason")
    for letter in shown:
        table.add_row(
            letter.message_id,
            letter.dead_lettered_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.task_id or "-",
            letter.error_type,
            f"{letter.source_topic}:{letter.partition}:{letter.offset}",
            letter.reason,
        )
    console.print(table)
    console.print(summary, highlight=False)


@app.command("show")
def show(
    letter_id: str = typer.Argument(..., metavar="ID", help="A dead letter's id (from `dlq list`), or its start."),
    since_s: float = SinceOption,
    as_json: bool = JsonOption,
    bootstrap: str = BootstrapOption,
) -> None:
    """One dead letter in full: why, where from, and the original message."""
    letters, _ = _read(bootstrap, since_s)
    found = resolve_prefix(letter_id, (x.message_id for x in letters), f"dead letter of the last {since_s:g}s", "ID")
    letter = next(x for x in letters if x.message_id == found)
    if as_json:
        print_json_lines([letter.model_dump(mode="json")])
        return
    for name, value in letter.model_dump(mode="json", exclude={"original"}).items():
        console.print(f"{name + ':':20} {value}", highlight=False, markup=False)
    original = base64.b64decode(letter.original)
    try:
        text = original.decode()
    except UnicodeDecodeError:
        text = f"({len(original)} bytes, not text: --json has them in base64)"
    console.print(f"{'original:':20} {text}", highlight=False, markup=False)
