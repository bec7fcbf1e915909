"""How the CLI prints: ``--json`` on every command that reads, whole values in a pipe, ids by unique prefix."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fixtures.cli import commands, handrail
from typer.testing import CliRunner

from handrail_cli.main import app

PROJECT_ROOT = Path(__file__).resolve().parents[3]

#: Commands without --json, and why: they change something (and say what in a line), or render files
#: in a format of their own.
NO_JSON = {
    ("submit",): "publishes a task and prints its id; with --wait, the result as JSON",
    ("halt",): "changes something",
    ("resume",): "changes something",
    ("demo",): "runs the demo",
    ("topics", "ensure"): "changes something",
    ("prompts", "activate"): "changes something",
    ("prompts", "rollback"): "changes something",
    ("review", "approve"): "changes something",
    ("review", "reject"): "changes something",
    ("review", "new-token"): "makes a token",
    ("autonomy", "set"): "changes something",
    ("autonomy", "clear"): "changes something",
    ("k8s", "render"): "renders manifests: YAML",
    ("acl", "render"): "renders ACLs in the --format asked for (json among them)",
    ("acl", "apply"): "changes something",
    ("keys", "generate"): "makes keys",
    ("keys", "trust"): "renders a trust store: JSON",
    ("redis", "users"): "writes an ACL file",
    ("dev", "services", "down"): "changes something",
    ("dev", "sasl", "up"): "changes something",
    ("dev", "sasl", "down"): "changes something",
}


def _has_json(command: Any) -> bool:
    return any("--json" in getattr(p, "opts", ()) for p in command.params)


def test_every_command_that_reads_has_json() -> None:
    found = commands()
    assert set(NO_JSON) <= set(found), f"no such commands: {set(NO_JSON) - set(found)}"
    missing = [" ".join(path) for path, command in found.items() if path not in NO_JSON and not _has_json(command)]
    assert not missing, f"these read and have no --json: {missing}"
    assert {("dlq", "list"), ("review", "list"), ("prompts", "list"), ("watch",), ("dev", "status")} <= {
        p for p, c in found.items() if _has_json(c)
    }


def _json_lines(output: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in output.splitlines()]
    assert rows and all(isinstance(r, dict) for r in rows), output
    return rows


REVIEWS: list[dict[str, Any]] = [
    {
        "review_id": review_id,
        "task_id": f"task-{review_id[:6]}",
        "workflow": "expense-approval",
        "step": "approve",
        "reason": "over 500: " + "a manager decides, " * 8 + "in full",
        "role": "manager",
        "approvals": [],
        "approvals_required": 1,
        "age_s": 12.0,
        "status": "pending",
    }
    for review_id in ("beef0001" + "0" * 24, "beef0002" + "0" * 24, "cafe0003" + "0" * 24)
]


@pytest.fixture
def review_service(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The review service's API, answered in process; returns the paths asked for."""
    asked: list[str] = []

    def request(method: str, url: str, **_: Any) -> httpx.Response:
        path = httpx.URL(url).path
        asked.append(path)
        if path == "/api/reviews":
            return httpx.Response(200, json=REVIEWS)
        found = [r for r in REVIEWS if path == f"/api/reviews/{r['review_id']}"]
        return httpx.Response(200, json=found[0]) if found else httpx.Response(404, json={"error": "not_found"})

    monkeypatch.setattr(httpx, "request", request)
    return asked


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    return {
        "HANDRAIL_REVIEW_TOKEN": "t",
        "HANDRAIL_RUN_DIR": str(tmp_path / "run"),
        "HANDRAIL_CONFIG_DIR": str(PROJECT_ROOT / "config"),
    }


@pytest.mark.parametrize(
    "args",
    [
        ["inventory"],
        ["review", "list"],
        ["review", "show", "cafe"],
        ["review", "tokens", "--reviewers", str(PROJECT_ROOT / "config" / "reviewers.yaml")],
        ["dev", "services", "status"],
        ["dev", "status"],
    ],
    ids=" ".join,
)
def test_json_is_one_object_a_line(args: list[str], offline_env: dict[str, str], review_service: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--json"], env=offline_env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _json_lines(result.stdout)


def test_prompts_list_and_show_as_json(tmp_path: Path, redis_url: str) -> None:
    shutil.copytree(PROJECT_ROOT / "config", tmp_path / "config")
    env = {
        "HANDRAIL_CONFIG_DIR": str(tmp_path / "config"),
        "HANDRAIL_REDIS_URL": redis_url,
        "HANDRAIL_REDIS_PREFIX": f"cli-{uuid.uuid4().hex[:8]}:",
    }
    listed = CliRunner().invoke(app, ["prompts", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    intake = next(r for r in _json_lines(listed.stdout) if r["prompt"] == "expense-intake")
    assert intake["versions"] == ["1", "2"] and intake["active"] == "1" and not intake["switched"]
    shown = CliRunner().invoke(app, ["prompts", "show", "expense-intake", "--json"], env=env)
    [prompt] = _json_lines(shown.stdout)
    assert prompt["ref"] == "expense-intake@1" and prompt["active"] and prompt["text"]


def test_review_ids_by_unique_prefix(offline_env: dict[str, str], review_service: list[str]) -> None:
    unique = CliRunner().invoke(app, ["review", "show", "beef0002", "--json"], env=offline_env)
    assert unique.exit_code == 0 and json.loads(unique.stdout)["review_id"] == REVIEWS[1]["review_id"]
    assert review_service[-1] == f"/api/reviews/{REVIEWS[1]['review_id']}"

    ambiguous = CliRunner().invoke(app, ["review", "show", "beef"], env=offline_env)
    assert ambiguous.exit_code == 2
    assert "'beef' is the start of 2 ids" in ambiguous.stderr
    assert REVIEWS[0]["review_id"] in ambiguous.stderr and REVIEWS[1]["review_id"] in ambiguous.stderr

    unknown = CliRunner().invoke(app, ["review", "show", "dead"], env=offline_env)
    assert unknown.exit_code == 2 and "no pending or recent review starts with 'dead'" in unknown.stderr


def _piped(*args: str, env: dict[str, str]) -> str:
    shown = handrail(*args, env={"COLUMNS": "80", **env}, timeout_s=60)
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout
    return shown.stdout


def test_a_pipe_gets_whole_values(tmp_path: Path) -> None:
    long_name = "a-name-that-runs-on-" * 8
    run_dir = tmp_path / long_name
    services = _piped("dev", "services", "status", env={"HANDRAIL_RUN_DIR": str(run_dir)})
    assert str(run_dir / "services" / "router.log") in services, services
    # Nothing answers on port 1: both are shown stopped, at their (long) addresses.
    redis_url = f"redis://{long_name}@127.0.0.1:1/0"
    infra = _piped("dev", "status", env={"HANDRAIL_KAFKA_BOOTSTRAP": "127.0.0.1:1", "HANDRAIL_REDIS_URL": redis_url})
    assert redis_url in infra, infra
