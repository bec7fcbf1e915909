"""``handrail``: submit and watch tasks, manage topics, read the dead-letter queue, run local infra."""

from __future__ import annotations

import typer

from handrail.cli import dlq, tasks, topics

app = typer.Typer(
    name="handrail",
    help="Handrail: a production runtime for AI agents on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("submit")(tasks.submit)
app.command("watch")(tasks.watch)
app.add_typer(topics.app, name="topics")
app.add_typer(dlq.app, name="dlq")


def _add_dev() -> None:
    from handrail.cli import dev

    app.add_typer(dev.app, name="dev", help="Start, stop and inspect local Kafka and Redis.")


_add_dev()


def main() -> None:
    """Console-script entry point."""
    app()
