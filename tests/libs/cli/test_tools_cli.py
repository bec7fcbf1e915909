"""``handrail tools list [--agent A]``: each tool, its source, flags and schemas; a real MCP server over stdio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fixtures.cli import PROJECT_ROOT, handrail
from tests.fixtures.mcp_tools import http_server, stdio_server
from tests.fixtures.stack import free_port

from handrail_cli.exit_codes import ExitCode

pytestmark = pytest.mark.timeout(120)


def _config(tmp_path: Path, server: dict[str, Any]) -> dict[str, str]:
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    agents = yaml.safe_load((config / "agents.yaml").read_text())
    agents["agents"]["expense-intake"]["mcp_servers"] = [server]
    (config / "agents.yaml").write_text(yaml.safe_dump(agents))
    return {"HANDRAIL_CONFIG_DIR": str(config)}


def test_lists_built_in_and_mcp_tools_with_their_source_flags_and_schemas(tmp_path: Path) -> None:
    server = stdio_server(tmp_path / "calls.jsonl", tools={"file_note": {"requires_approval": True, "cost_usd": 0.01}})
    done = handrail("tools", "list", "--agent", "expense-intake", "--json", env=_config(tmp_path, server))
    assert done.returncode == ExitCode.OK, done.stderr
    rows = {row["tool"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert list(rows) == [
        "lookup_employee",
        "convert_currency",
        "billing__lookup_invoice",
        "billing__file_note",
        "billing__slow",
    ]
    assert rows["lookup_employee"]["source"] == "plugin:expenses" and rows["lookup_employee"]["status"] == "ok"
    note = rows["billing__file_note"]
    assert note["source"] == "mcp:billing" and note["status"] == "ok"
    assert (note["side_effect"], note["requires_approval"], note["cost_usd"]) == (True, True, 0.01)
    assert note["args_schema"]["required"] == ["text"] and note["result_schema"]["type"] == "object"
    assert rows["billing__lookup_invoice"]["side_effect"] is False

    table = handrail("tools", "list", "--agent", "expense-intake", env=_config(tmp_path / "t", server))
    assert table.returncode == ExitCode.OK, table.stderr
    assert "billing__file_note  mcp:billing  side effect, approval, $0.01  ok" in table.stdout
    assert '  args: {"properties": {"text"' in table.stdout


def test_a_server_that_cannot_be_reached_is_shown_and_fails_the_command(tmp_path: Path) -> None:
    server = http_server(f"http://127.0.0.1:{free_port()}/mcp", timeout_s=5)
    done = handrail("tools", "list", "--agent", "expense-intake", "--json", env=_config(tmp_path, server))
    assert done.returncode == ExitCode.FAILED
    rows = {row["tool"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows["lookup_employee"]["status"] == "ok"
    assert rows["billing__slow"]["status"].startswith("unavailable: MCP server 'billing' cannot be reached")
    assert rows["billing__slow"]["args_schema"] is None
    assert "3 of 5 tools of 'expense-intake' would not be offered" in done.stderr


def test_an_allowed_tool_the_server_lacks_is_refused(tmp_path: Path) -> None:
    server = {**stdio_server(tmp_path / "calls.jsonl"), "allow": ["lookup_invoice", "refund"]}
    done = handrail("tools", "list", "--agent", "expense-intake", "--json", env=_config(tmp_path, server))
    assert done.returncode == ExitCode.FAILED
    rows = {row["tool"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows["billing__refund"]["status"] == "refused: the server does not offer it"
    assert rows["billing__lookup_invoice"]["status"] == "ok"


def test_an_unknown_agent_is_a_usage_error(tmp_path: Path) -> None:
    done = handrail("tools", "list", "--agent", "nobody")
    assert done.returncode == ExitCode.USAGE
    assert "unknown agent 'nobody'" in done.stderr


def test_without_an_agent_every_in_process_tool_is_listed_with_the_plugin_it_came_from() -> None:
    done = handrail("tools", "list", "--json")
    assert done.returncode == ExitCode.OK, done.stderr
    rows = {row["tool"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert sorted(rows) == ["check_policy", "convert_currency", "lookup_employee", "record_decision"]
    assert {row["source"] for row in rows.values()} == {"plugin:expenses"}
    assert rows["record_decision"]["side_effect"] is True
