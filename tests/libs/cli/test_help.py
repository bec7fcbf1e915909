"""Every command's ``--help`` shows its help text as written: nothing eaten as markup, no RST quoting."""

from __future__ import annotations

import re

import pytest
from tests.fixtures.cli import command_paths, help_texts
from typer.testing import CliRunner

from handrail_cli.main import app

#: Wide enough that no help line wraps, so a bracketed phrase stays on one line.
_WIDE = {"COLUMNS": "400"}
_BOX = re.compile(r"[│╭╮╰╯─]")


def _rendered(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env=_WIDE)
    assert result.exit_code == 0, result.output
    return " ".join(_BOX.sub(" ", result.output).split())


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(("handrail", *p)))
def test_help_shows_what_was_written(path: tuple[str, ...]) -> None:
    shown = _rendered(path)
    for text in help_texts(path):
        for bracketed in re.findall(r"\[[^\]]*\]", text):
            assert " ".join(bracketed.split()) in shown, f"{bracketed!r} of {' '.join(path)} was eaten as markup"
    assert "``" not in shown, f"RST quoting left in the help of {' '.join(path)}"


def test_the_walk_sees_every_command() -> None:
    paths = {" ".join(p) for p in command_paths()}
    assert {"dlq list", "review show", "dev services status", "prompts list", "watch", "trace"} <= paths
