"""``handrail``: submit and watch tasks, manage topics, read the dead-letter queue, run local infra."""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import typer

from handrail.errors import HandrailError
from handrail_cli import (
    audit,
    autonomy,
    deploy,
    dev,
    dlq,
    golden,
    halts,
    prompts,
    replay,
    review,
    shadow,
    task_ops,
    tasks,
    tools,
    topics,
)
from handrail_cli.common import JSON_OUTPUT, err_console
from handrail_cli.exit_codes import ExitCode, epilog

app = typer.Typer(
    name="handrail",
    help="Handrail: a production runtime for AI agents on Kafka.",
    epilog=f"{epilog()}\n\n{JSON_OUTPUT}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("submit")(tasks.submit)
app.command("watch")(tasks.watch)
app.command("trace")(audit.trace)
app.command("replay")(replay.replay)
app.command("halt")(halts.halt)
app.command("resume")(halts.resume)
app.add_typer(task_ops.app, name="task")
app.add_typer(golden.app, name="golden")
app.add_typer(shadow.app, name="shadow")
app.add_typer(topics.app, name="topics")
app.add_typer(dlq.app, name="dlq")
app.add_typer(audit.app, name="audit")
app.add_typer(prompts.app, name="prompts")
app.add_typer(review.app, name="review")
app.add_typer(autonomy.app, name="autonomy")
app.add_typer(tools.app, name="tools")
app.add_typer(deploy.k8s_app, name="k8s")
app.add_typer(deploy.acl_app, name="acl")
app.add_typer(deploy.keys_app, name="keys")
app.add_typer(deploy.redis_app, name="redis")
app.command("inventory")(deploy.inventory_command)
app.add_typer(dev.app, name="dev", help="Start, stop and inspect local Kafka, Redis and the services.")


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"handrail {metadata.version('handrail')}")
        raise typer.Exit()


@app.callback()
def _quiet_clients(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    # The Kafka client logs every failed connection attempt; the CLI reports the outcome itself.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@app.command("demo")
def demo() -> None:
    """Run the expense-approval demo end to end (starts and stops what it needs)."""
    from handrail_dev.demo import run_demo  # the demo pulls in the launcher; keep other commands quick

    try:
        code = run_demo(Path.cwd())
    except HandrailError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()
