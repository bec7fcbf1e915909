"""The ``--base-port`` option of ``handrail dev`` and ``handrail dev services``: which local stack to act on."""

from __future__ import annotations

import typer

from handrail_dev import DevSettings
from handrail_dev.ports import STACK_SPAN

BASE_PORT_OPTION = typer.Option(
    None,
    "--base-port",
    min=1,
    max=65535 - STACK_SPAN,
    help=(
        "Act on a stack of its own: Kafka on this port (controller + 1), Redis + 2, the services from + 10, "
        "files under .run/port-<port> (default: HANDRAIL_BASE_PORT; unset: Kafka 9092, Redis 6379, "
        f"services 8081). Stacks {STACK_SPAN} ports apart run side by side."
    ),
)


def dev_settings(base_port: int | None) -> DevSettings:
    """The launcher's settings: the stack on ``base_port`` when the command line says, else as ``HANDRAIL_*`` say."""
    return DevSettings() if base_port is None else DevSettings.at_base_port(base_port)
