"""``handrail topics ensure``: create every topic with its partitions, retention and compaction."""

from __future__ import annotations

import typer

from handrail.contracts import load_contracts
from handrail.errors import ContractError
from handrail.tools import default_registry
from handrail.topics import Topics, ensure_topics
from handrail_cli.common import console, err_console, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings

app = typer.Typer(no_args_is_help=True, help="Manage Handrail's topics.")


@app.command("ensure")
def ensure(
    bootstrap: str = typer.Option(None, help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."),
    prefix: str = typer.Option(None, help="Topic prefix (default: HANDRAIL_TOPIC_PREFIX or 'handrail.')."),
    steps_retention_days: float = typer.Option(
        None,
        "--steps-retention-days",
        min=0.001,
        help="How long the steps topic keeps step reports, their recordings (replay) and checkpoints (resume, "
        "fork); default HANDRAIL_STEPS_RETENTION_DAYS or 7. Applies when the topic is created.",
    ),
) -> None:
    """Create the topics that are missing (one agent topic per agent in agents.yaml)."""
    settings = CliSettings()
    try:
        contracts = load_contracts(settings.config_dir, default_registry().names())
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None
    days = steps_retention_days if steps_retention_days is not None else settings.steps_retention_days
    specs = Topics(prefix or settings.topic_prefix).specs(contracts.agents, steps_retention_days=days)
    created = run(ensure_topics(bootstrap or settings.kafka_bootstrap, specs, credentials=settings.kafka_credentials()))
    for spec in specs:
        mark = "[green]created[/green]" if spec.name in created else "exists"
        console.print(f"{spec.name:40} {spec.partitions:>2} partitions  {mark}")
