"""agents.yaml's ``mcp_servers``: what loads, and bad entries refused with the agent, the field and the reason."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from handrail.contracts import load_contracts
from handrail.errors import ContractError
from handrail.tools import default_registry

CONFIG = Path(__file__).resolve().parents[3] / "config"
STDIO = {"name": "billing", "transport": "stdio", "command": "billing-mcp", "allow": ["lookup_invoice"]}


def _config(tmp_path: Path, servers: list[dict[str, Any]], **agent: Any) -> Path:
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    agents = yaml.safe_load((config / "agents.yaml").read_text())
    agents["agents"]["expense-intake"].update(mcp_servers=servers, **agent)
    (config / "agents.yaml").write_text(yaml.safe_dump(agents))
    return config


def test_allowed_mcp_tools_join_the_agents_tools_under_the_servers_name(tmp_path: Path) -> None:
    http = {"name": "files", "transport": "http", "url": "https://files.example/mcp", "allow": ["read", "write"]}
    contracts = load_contracts(_config(tmp_path, [STDIO, http]), default_registry().names())
    agent = contracts.agent("expense-intake")
    assert agent.tools == [
        "lookup_employee",
        "convert_currency",
        "billing__lookup_invoice",
        "files__read",
        "files__write",
    ]
    assert agent.mcp_servers[0].timeout_s == 30 and agent.mcp_servers[1].headers == {}
    # Dumped and read again (a copy, a redeploy): each tool once.
    assert type(agent).model_validate(agent.model_dump()).tools == agent.tools


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ({**STDIO, "transport": "sse"}, r"field 'mcp_servers.0.transport': Input should be 'stdio' or 'http'"),
        ({k: v for k, v in STDIO.items() if k != "command"}, r"transport stdio needs a `command`"),
        ({**STDIO, "url": "http://x/mcp"}, r"`url` and `headers` are for transport http, not stdio"),
        ({"name": "b", "transport": "http", "allow": ["x"]}, r"transport http needs a `url`"),
        ({**STDIO, "allow": []}, r"field 'mcp_servers.0.allow'"),
        (
            {**STDIO, "tools": {"refund": {"side_effect": True}}},
            r"`tools` sets options of tools not in `allow`: \['refund'\]",
        ),
        ({**STDIO, "name": "Billing_2"}, r"field 'mcp_servers.0.name'"),
        ({**STDIO, "allow": ["x" * 70]}, r"`allow` has names that do not make a tool name"),
        ({**STDIO, "timeout_s": 0}, r"field 'mcp_servers.0.timeout_s'"),
        ({**STDIO, "toolz": {}}, r"field 'mcp_servers.0.toolz': Extra inputs are not permitted"),
    ],
)
def test_bad_server_entries_are_refused_with_the_reason(tmp_path: Path, server: dict[str, Any], expected: str) -> None:
    with pytest.raises(ContractError, match=r"agents.yaml: agent 'expense-intake': .*" + expected):
        load_contracts(_config(tmp_path, [server]), default_registry().names())


def test_two_servers_of_one_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"`mcp_servers` names a server twice"):
        load_contracts(_config(tmp_path, [STDIO, STDIO]), default_registry().names())


def test_an_agent_may_not_name_another_agents_mcp_tool(tmp_path: Path) -> None:
    config = _config(tmp_path, [STDIO])
    agents = yaml.safe_load((config / "agents.yaml").read_text())
    agents["agents"]["expense-approver"]["tools"].append("billing__lookup_invoice")
    (config / "agents.yaml").write_text(yaml.safe_dump(agents))
    with pytest.raises(
        ContractError, match=r"agent 'expense-approver': field 'tools': unknown tool 'billing__lookup_invoice'"
    ):
        load_contracts(config, default_registry().names())


def test_an_escalation_rule_may_name_an_mcp_tool(tmp_path: Path) -> None:
    config = _config(tmp_path, [STDIO])
    workflows = yaml.safe_load((config / "workflows.yaml").read_text())
    workflows["workflows"]["expense-approval"].setdefault("escalations", []).append(
        {"name": "big-invoices", "tool": "billing__lookup_invoice", "when": "true", "reason": "every invoice look-up"}
    )
    (config / "workflows.yaml").write_text(yaml.safe_dump(workflows))
    contracts = load_contracts(config, default_registry().names())
    assert any(r.tool == "billing__lookup_invoice" for r in contracts.workflows["expense-approval"].escalations)
