"""The CLI's exit codes have one home, and ``handrail --help`` and the README say what each means."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from handrail_cli.exit_codes import ExitCode
from handrail_cli.main import app

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CLI_SOURCES = PROJECT_ROOT / "libs" / "handrail" / "cli"


def test_every_exit_code_says_when() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 130]
    assert all(code.__doc__ and code.__doc__ != ExitCode.__doc__ for code in ExitCode)


def test_help_and_readme_list_every_exit_code() -> None:
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "250"}).output
    readme = (PROJECT_ROOT / "README.md").read_text()
    for code in ExitCode:
        assert re.search(rf"\b{code.value}  {re.escape(str(code.__doc__))}", shown), f"--help lacks exit code {code}"
        assert f"| {code.value} | {code.__doc__} |" in readme, f"README lacks exit code {code}"


def test_commands_exit_only_with_the_named_codes() -> None:
    bare = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(CLI_SOURCES.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"(Exit|exit)\(\s*\d", line)
    ]
    assert not bare, f"use handrail_cli.exit_codes.ExitCode: {bare}"
