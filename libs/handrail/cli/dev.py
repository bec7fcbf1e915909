"""``handrail dev up | down | status``: the local Kafka and Redis for development and tests."""

from __future__ import annotations

from collections.abc import Callable

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from handrail.cli.dev_stack import BASE_PORT_OPTION, dev_settings
from handrail.dev import DevInfraError, DevSettings, InfraStatus, ServiceState, down, status, up

app = typer.Typer(help="Run a local Kafka (KRaft, from Maven Central jars) and Redis.", no_args_is_help=True)

_out = Console()
_err = Console(stderr=True)
_STATE_STYLE = {ServiceState.RUNNING: "green", ServiceState.EXTERNAL: "cyan", ServiceState.STOPPED: "yellow"}


def _render(result: InfraStatus, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("service", "state", "address", "pid", "log", "note"):
        table.add_column(column, overflow="fold")
    for svc in result.services:
        style = _STATE_STYLE[svc.state]
        table.add_row(
            svc.name,
            f"[{style}]{svc.state.value}[/{style}]",
            svc.address,
            str(svc.pid or ""),
            str(svc.log_path or ""),
            svc.detail,
        )
    _out.print(table)


def _run(action: Callable[[DevSettings], InfraStatus], title: str, base_port: int | None) -> None:
    try:
        settings = dev_settings(base_port)
        result = action(settings)
    except ValidationError as exc:
        _err.print(Text.assemble(("error: ", "bold red"), f"invalid HANDRAIL_* setting:\n{exc}"), highlight=False)
        raise typer.Exit(1) from None
    except DevInfraError as exc:
        _err.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
        raise typer.Exit(1) from None
    _render(result, title)


@app.command("up")
def up_command(base_port: int | None = BASE_PORT_OPTION) -> None:
    """Start Kafka and Redis unless they already answer; waits until both are ready."""
    _run(up, "handrail dev up", base_port)


@app.command("down")
def down_command(base_port: int | None = BASE_PORT_OPTION) -> None:
    """Stop the Kafka and Redis that `up` started; external servers are left alone."""
    _run(down, "handrail dev down", base_port)


@app.command("status")
def status_command(base_port: int | None = BASE_PORT_OPTION) -> None:
    """Show, for Kafka and Redis: running (started by `up`), external, or stopped."""
    _run(status, "handrail dev status", base_port)


def _add_subcommands() -> None:
    from handrail.cli.deploy import sasl_app
    from handrail.cli.dev_services import app as services_app

    app.add_typer(services_app, name="services")
    app.add_typer(sasl_app, name="sasl")


_add_subcommands()
