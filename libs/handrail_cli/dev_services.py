"""``handrail dev services up | down | status``: every Handrail service as a local process."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.table import Table

from handrail.contracts import Contracts, load_contracts
from handrail.errors import ContractError
from handrail.tools import default_registry
from handrail.topics import Topics, ensure_topics
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.dev_stack import BASE_PORT_OPTION, dev_settings
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings
from handrail_dev import DevInfraError, DevSettings, services
from handrail_dev.reviewer_tokens import dev_tokens, login_hint
from handrail_dev.services import with_reviewer_tokens

app = typer.Typer(no_args_is_help=True, help="Run router, validator and one worker per agent as local processes.")


def _agents() -> list[str]:
    return sorted(_contracts().agents)


def _shadows() -> list[str]:
    return sorted(name for name, spec in _contracts().agents.items() if spec.shadow is not None)


def _contracts() -> Contracts:
    try:
        return load_contracts(Path("config"), default_registry().names())
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None


def _plan(settings: DevSettings) -> list[services.ServiceProcess]:
    return services.plan(_agents(), base_port=settings.ports.services, shadows=_shadows())


def _show(processes: list[services.ServiceProcess], run_dir: Path, as_json: bool) -> None:
    rows: list[dict[str, Any]] = []
    for name, pid in services.running(processes, run_dir).items():
        process = next(p for p in processes if p.name == name)
        health = f"http://127.0.0.1:{process.http_port}/healthz" if pid else None
        rows.append({"service": name, "pid": pid, "health": health, "log": str(process.paths(run_dir)[1])})
    if as_json:
        print_json_lines(rows)
        return
    table = Table("service", "pid", "health", "log")
    for row in rows:
        table.add_row(row["service"], str(row["pid"] or "stopped"), row["health"] or "-", row["log"])
    console.print(table)


@app.command("up")
def up_command(base_port: int | None = BASE_PORT_OPTION, as_json: bool = JsonOption) -> None:
    """Create the topics that are missing, start every service that is not running and wait until each is healthy.

    The services use the stack's Kafka and Redis (`handrail dev up` with the same base port).
    The human-review service gets a token for every reviewer of `config/reviewers.yaml`
    (kept in the run dir, reused across restarts); how to log in is printed at the end.
    """
    settings = dev_settings(base_port)
    try:
        tokens, tokens_file = dev_tokens(settings.run_dir, Path("config") / "reviewers.yaml")
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None
    agents = _agents()
    processes = [
        with_reviewer_tokens(p, tokens)
        for p in services.plan(agents, base_port=settings.ports.services, shadows=_shadows())
    ]
    # The services consume from the moment they start, and the broker creates no topic by itself.
    cli = CliSettings()
    specs = Topics(cli.topic_prefix).specs(agents, steps_retention_days=cli.steps_retention_days)
    run(ensure_topics(settings.kafka_bootstrap, specs, credentials=cli.kafka_credentials()))
    try:
        services.up(processes, settings.run_dir, services.stack_env(settings), Path.cwd())
    except DevInfraError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    _show(processes, settings.run_dir, as_json)
    redis_at = urlsplit(settings.redis_url).netloc.rpartition("@")[2]  # no password on the screen
    (err_console if as_json else console).print(
        f"on Kafka {settings.kafka_bootstrap} and Redis {redis_at}", highlight=False
    )
    review = next(p for p in processes if p.name == "human-review")
    (err_console if as_json else console).print(
        login_hint(f"http://127.0.0.1:{review.http_port}", tokens, tokens_file), highlight=False
    )


@app.command("down")
def down_command(base_port: int | None = BASE_PORT_OPTION) -> None:
    """Stop the services `up` started."""
    settings = dev_settings(base_port)
    stopped = services.down(_plan(settings), settings.run_dir)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command("status")
def status_command(base_port: int | None = BASE_PORT_OPTION, as_json: bool = JsonOption) -> None:
    """Show which services run, their pids, health URLs and logs."""
    settings = dev_settings(base_port)
    _show(_plan(settings), settings.run_dir, as_json)
