"""What the CLI's commands share: settings, running coroutines, and error reporting."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO, TypeVar

import typer
from aiokafka.errors import KafkaConnectionError, KafkaError
from rich.console import Console

from handrail.errors import HandrailError

T = TypeVar("T")

#: Written to a pipe or a file, output keeps every character: a script gets full ids, not a table cut at 80.
_UNBOUNDED_WIDTH = 10_000


def _width(stream: TextIO) -> int | None:
    return None if stream.isatty() else _UNBOUNDED_WIDTH


console = Console(soft_wrap=True, width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; expected failures print one readable line and exit 1."""
    try:
        return asyncio.run(coro)
    except HandrailError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KafkaConnectionError as exc:
        err_console.print(f"[red]error:[/red] cannot reach Kafka: {exc} (is it running? `make infra` starts it)")
        raise typer.Exit(1) from None
    except KafkaError as exc:
        err_console.print(f"[red]error:[/red] Kafka: {exc}")
        raise typer.Exit(1) from None


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
