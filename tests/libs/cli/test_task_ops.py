"""``handrail task resume|fork`` arguments that are wrong before anything is read: usage errors, no I/O."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from handrail_cli.main import app

# Kafka on the discard port: a command that got as far as the bus would fail with exit 1, not 2.
ENV = {"HANDRAIL_KAFKA_BOOTSTRAP": "127.0.0.1:9", "COLUMNS": "200"}


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["task", "fork", "t-1", "--from-step", "intake"], "--reason"),
        (["task", "fork", "t-1", "--reason", "x"], "--from-step"),
        (
            ["task", "fork", "t-1", "--from-step", "intake", "--reason", "x", "--task-id", "no spaces"],
            "letters, digits",
        ),
        (["task", "resume", "t-1"], "--reason"),
        (["task", "resume", "t-1", "--reason", "x", "--top-up", "steps=-1"], "greater than or equal to 0"),
        (["task", "resume", "t-1", "--reason", "x", "--top-up", "coffee=1"], "expected NAME=AMOUNT"),
        (["task", "resume", "t-1", "--reason", "x", "--top-up", "steps=many"], "is not a number"),
    ],
)
def test_bad_arguments_are_usage_errors_that_say_what_is_wrong(args: list[str], said: str) -> None:
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split()), result.output
