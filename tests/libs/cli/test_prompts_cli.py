"""``handrail prompts list|show|activate|rollback`` against real Redis, on a copy of config/."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from handrail_cli.prompts import app

PROJECT_CONFIG = Path(__file__).resolve().parents[3] / "config"


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    shutil.copytree(PROJECT_CONFIG, tmp_path / "config")
    return {
        "HANDRAIL_CONFIG_DIR": str(tmp_path / "config"),
        "HANDRAIL_REDIS_URL": redis_url,
        "HANDRAIL_REDIS_PREFIX": f"cli-{uuid.uuid4().hex[:8]}:",
        "COLUMNS": "200",
    }


def prompts(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_list_activate_show_and_rollback(env: dict[str, str]) -> None:
    code, out, _ = prompts(env, "list")
    assert code == 0
    row = next(line for line in out.splitlines() if "expense-intake" in line)
    assert "1, 2" in row and "1 (declared)" in row

    code, out, _ = prompts(env, "activate", "expense-intake", "2")
    assert code == 0 and "expense-intake: 1 -> 2" in out
    code, out, _ = prompts(env, "list")
    assert "2 (switched)" in next(line for line in out.splitlines() if "expense-intake" in line)

    code, out, _ = prompts(env, "show", "expense-intake")
    assert code == 0 and "expense-intake@2 (active)" in out and "Do this in order" in out
    assert "rollback returns to: 1" in out and "activate -> 2 by cli" in out

    code, out, _ = prompts(env, "rollback", "expense-intake")
    assert code == 0 and "expense-intake: 2 -> 1 (rolled back)" in out
    code, out, _ = prompts(env, "show", "expense-intake", "--version", "2")
    assert "expense-intake@2 (not active)" in out


def test_bad_activations_are_one_clear_line_and_change_nothing(env: dict[str, str]) -> None:
    code, _, err = prompts(env, "activate", "expense-intake", "9")
    assert code == 1 and "prompt 'expense-intake' has no version '9'" in err and "Traceback" not in err

    broken = Path(env["HANDRAIL_CONFIG_DIR"]) / "prompts" / "expense-intake" / "3.md"
    broken.write_text("Hello ${agent}, your budget is ${budget}.")
    code, _, err = prompts(env, "activate", "expense-intake", "3")
    assert code == 1 and "unknown variable(s) ['budget']" in " ".join(err.split())

    code, _, err = prompts(env, "rollback", "expense-intake")
    assert code == 1 and "no earlier version to roll back to" in err
    code, out, _ = prompts(env, "list")
    assert "1 (declared)" in next(line for line in out.splitlines() if "expense-intake" in line)


def test_an_unreachable_redis_is_one_clear_line(env: dict[str, str]) -> None:
    code, _, err = prompts({**env, "HANDRAIL_REDIS_URL": "redis://127.0.0.1:9/0"}, "activate", "expense-intake", "2")
    assert code == 1 and "Redis unavailable" in err and "Traceback" not in err
