"""``handrail dev up | down | status``: the local Kafka and Redis for development and tests."""

from __future__ import annotations

from collections.abc import Callable

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from handrail_cli.common import JsonOption, console, err_console, print_json_lines
from handrail_cli.dev_stack import BASE_PORT_OPTION, dev_settings
from handrail_cli.exit_codes import ExitCode
from handrail_dev import DevInfraError, DevSettings, InfraStatus, ServiceState, down, status, up

app = typer.Typer(help="Run a local Kafka (KRaft, from Maven Central jars) and Redis.", no_args_is_help=True)

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
    console.print(table)


def _run(action: Callable[[DevSettings], InfraStatus], title: str, base_port: int | None, as_json: bool) -> None:
    try:
        settings = dev_settings(base_port)
        result = action(settings)
    except ValidationError as exc:
        err_console.print(
            Text.assemble(("error: ", "bold red"), f"invalid HANDRAIL_* setting:\n{exc}"), highlight=False
        )
        raise typer.Exit(ExitCode.FAILED) from None
    except DevInfraError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
        raise typer.Exit(ExitCode.FAILED) from None
    if as_json:
        print_json_lines(
            {
                "service": svc.name,
                "state": svc.state.value,
                "address": svc.address,
                "pid": svc.pid,
                "changed": svc.changed,
                "log": str(svc.log_path) if svc.log_path else None,
                "note": svc.detail,
            }
            for svc in result.services
        )
        return
    _render(result, title)


@app.command("up")
def up_command(base_port: int | None = BASE_PORT_OPTION, as_json: bool = JsonOption) -> None:
    """Start Kafka and Redis unless they already answer; waits until both are ready."""
    _run(up, "handrail dev up", base_port, as_json)


@app.command("down")
def down_command(base_port: int | None = BASE_PORT_OPTION, as_json: bool = JsonOption) -> None:
    """Stop the Kafka and Redis that `up` started; external servers are left alone."""
    _run(down, "handrail dev down", base_port, as_json)


@app.command("status")
def status_command(base_port: int | None = BASE_PORT_OPTION, as_json: bool = JsonOption) -> None:
    """Show, for Kafka and Redis: running (started by `up`), external, or stopped."""
    _run(status, "handrail dev status", base_port, as_json)


def _add_subcommands() -> None:
    from handrail_cli.deploy import sasl_app
    from handrail_cli.dev_services import app as services_app

    app.add_typer(services_app, name="services")
    app.add_typer(sasl_app, name="sasl")


_add_subcommands()
