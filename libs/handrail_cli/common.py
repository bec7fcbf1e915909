"""What the CLI's commands share: the consoles, ``--json`` output, running coroutines, error reporting, ids."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import typer
from aiokafka.errors import KafkaConnectionError, KafkaError
from rich.console import Console

from handrail.errors import HandrailError
from handrail.service.settings import RedisSettings
from handrail_cli.exit_codes import ExitCode

T = TypeVar("T")

#: Written to a pipe or a file, output keeps every character: a script gets full ids, not a table cut at 80.
_UNBOUNDED_WIDTH = 10_000


def _width(stream: TextIO) -> int | None:
    return None if stream.isatty() else _UNBOUNDED_WIDTH


#: Every command prints through these two (tables, trees, messages), so a pipe gets whole values everywhere.
console = Console(soft_wrap=True, width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))

#: What ``--json`` means on every command that has it; ``handrail --help`` and the README say the same.
JSON_OUTPUT = (
    "--json, on every command that reads: JSON Lines on stdout, one JSON object per line "
    "(one per item of a list, one for a single thing), and nothing else there; notes for people go to stderr."
)

JsonOption = typer.Option(False, "--json", help="Print JSON Lines: one JSON object per line.")


def print_json_lines(objects: Iterable[Any]) -> None:
    """``--json`` output: each object on a line of its own, compact, keys as given."""
    for item in objects:
        typer.echo(json.dumps(item, ensure_ascii=False, default=str))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; expected failures print one readable line and exit 1."""
    try:
        return asyncio.run(coro)
    except HandrailError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    except KafkaConnectionError as exc:
        err_console.print(f"[red]error:[/red] cannot reach Kafka: {exc} (is it running? `make infra` starts it)")
        raise typer.Exit(ExitCode.FAILED) from None
    except KafkaError as exc:
        err_console.print(f"[red]error:[/red] Kafka: {exc}")
        raise typer.Exit(ExitCode.FAILED) from None


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """Parse ``text`` (JSON, or ``@path`` to a JSON file) as an object, or exit with a usage error."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {text[1:]}: {exc.strerror}", param_hint=what) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=what)
    return value


#: An ambiguous prefix lists this many of the ids it starts, then says how many more.
_CANDIDATES_SHOWN = 10


def resolve_prefix(typed: str, known: Iterable[str], what: str, param_hint: str) -> str:
    """The id in ``known`` that ``typed`` is, or is the unique start of.

    Unknown or ambiguous, it is a usage error that says so, listing the candidates.
    """
    ids = sorted(set(known))
    if typed in ids:
        return typed
    matches = [i for i in ids if i.startswith(typed)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise typer.BadParameter(f"no {what} starts with {typed!r}", param_hint=param_hint)
    listed = ", ".join(matches[:_CANDIDATES_SHOWN])
    if len(matches) > _CANDIDATES_SHOWN:
        listed += f" and {len(matches) - _CANDIDATES_SHOWN} more"
    raise typer.BadParameter(
        f"{typed!r} is the start of {len(matches)} ids ({listed}); give more of the id", param_hint=param_hint
    )


#: Glob characters Redis's SCAN MATCH would read in a typed id; escaped so they match themselves.
_GLOB = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


def resolve_task(typed: str, settings: RedisSettings) -> str:
    """The task ``typed`` is, or is the unique start of, among the tasks the state store knows (running,
    or ended within the week their records are kept); an ambiguous prefix is a usage error listing them.

    ``settings``: where the state store is (the CLI's). Without Redis, or
    when no known task starts so, ``typed`` is taken as the full id (the command then says it found nothing).
    """
    from redis.exceptions import RedisError

    async def known() -> list[str]:
        redis = settings.redis_client()
        prefix = settings.redis_prefix
        pattern = f"{prefix}{{{typed.translate(_GLOB)}*}}:task"
        try:
            found = []
            async for key in redis.scan_iter(match=pattern, count=1000):
                name = key.decode() if isinstance(key, bytes) else str(key)
                found.append(name[len(prefix) + 1 : -len("}:task")])
                if len(found) > _CANDIDATES_SHOWN * 10:
                    break
            return found
        finally:
            await redis.aclose()

    try:
        ids = asyncio.run(known())
    except (RedisError, OSError, HandrailError):
        return typed
    if typed in ids or not ids:
        return typed
    return resolve_prefix(typed, ids, "task", "TASK")
