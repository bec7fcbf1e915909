"""``handrail dlq list``: what was dead-lettered, and why."""

from __future__ import annotations

import time

import typer
from pydantic import ValidationError
from rich.table import Table

from handrail.cli.common import console, run
from handrail.cli.settings import CliSettings
from handrail.client import follow, open_reader
from handrail.messages import DeadLetter
from handrail.topics import Topics

app = typer.Typer(no_args_is_help=True, help="Read the dead-letter queue.")


@app.command("list")
def list_(
    since_s: float = typer.Option(86400.0, "--since-s", min=0, help="How far back to look."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many (the newest)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    bootstrap: str = typer.Option(None, help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."),
) -> None:
    """List dead letters: reason, error type, where they came from."""
    settings = CliSettings()
    topic = Topics(settings.topic_prefix).dlq

    async def go() -> tuple[list[DeadLetter], int, int]:
        reader = await open_reader(
            bootstrap or settings.kafka_bootstrap,
            [topic],
            int((time.time() - since_s) * 1000),
            settings.kafka_credentials(),
        )
        letters: list[DeadLetter] = []
        unreadable = 0
        try:
            async for record in follow(reader, idle_timeout_s=1.0):
                try:
                    letters.append(DeadLetter.model_validate_json(record.value or b""))
                except ValidationError:
                    unreadable += 1  # not ours (someone else wrote to the topic): counted, not a crash
        finally:
            await reader.stop()
        return letters[-limit:], len(letters), unreadable

    letters, total, unreadable = run(go())
    if as_json:
        for letter in letters:
            console.print(letter.model_dump_json(), highlight=False, soft_wrap=True)
        return
    table = Table("when", "task", "error type", "from", "reason")
    for letter in letters:
        table.add_row(
            letter.dead_lettered_at.strftime("%H:%M:%S"),
            letter.task_id or "-",
            letter.error_type,
            f"{letter.source_topic}:{letter.partition}:{letter.offset}",
            letter.reason,
        )
    console.print(table)
    shown = f"{total} dead letter(s)" if len(letters) == total else f"the newest {len(letters)} of {total} dead letters"
    console.print(
        f"{shown} in the last {since_s:g}s" + (f"; {unreadable} unreadable record(s) skipped" if unreadable else ""),
        highlight=False,
    )
