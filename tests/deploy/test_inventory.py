"""`handrail inventory`: the AI system inventory, from the contracts and the tool registry."""

from __future__ import annotations

import json

from tests.deploy.helpers import PROJECT_ROOT, app
from typer.testing import CliRunner

from handrail.contracts import load_contracts
from handrail.tools import default_registry
from handrail_deploy.inventory import inventory

ENV = {"HANDRAIL_CONFIG_DIR": str(PROJECT_ROOT / "config"), "COLUMNS": "250"}


def test_one_entry_per_agent_with_everything_an_auditor_asks_for() -> None:
    tools = default_registry()
    contracts = load_contracts(PROJECT_ROOT / "config", tools.names())
    entries = {e.agent: e for e in inventory(contracts, tools)}
    assert set(entries) == set(contracts.agents)
    for name, agent in contracts.agents.items():
        entry = entries[name]
        assert (entry.owner, entry.purpose, entry.model_chain) == (agent.owner, agent.purpose, agent.model_chain)
        assert (entry.autonomy, entry.risk_class) == (agent.autonomy.value, agent.risk_class)
        assert [t.name for t in entry.tools] == agent.tools
        assert entry.data_access["reads"] == [f"handrail.agent.{name}"]  # its topic only: it never rebuilds
        assert entry.kafka_principal == f"User:handrail-agent-{name}"
        for use in entry.tools:
            spec = tools.get(use.name)
            assert spec is not None and use.side_effect == spec.spec.side_effect
        assert entry.data_access["side_effects"] == [t.name for t in entry.tools if t.side_effect]
        assert entry.workflows, f"{name} serves no workflow step"


def test_json_and_table_output() -> None:
    runner = CliRunner()
    as_json = runner.invoke(app, ["inventory", "--json"], env=ENV)
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.output.splitlines()]  # JSON Lines: one agent a line
    assert {r["agent"] for r in rows} == {
        "expense-intake", "expense-approver", "vendor-checker", "risk-classifier", "vendor-writer",
    }  # fmt: skip
    assert {"agent", "owner", "purpose", "model_chain", "tools", "data_access", "autonomy", "risk_class"} <= set(
        rows[0]
    )
    table = runner.invoke(app, ["inventory"], env=ENV)
    assert table.exit_code == 0 and "expense-approver" in table.output and "finance-platform" in table.output


def test_a_broken_contract_exits_2() -> None:
    result = CliRunner().invoke(app, ["inventory"], env={"HANDRAIL_CONFIG_DIR": "/nonexistent"})
    assert result.exit_code == 2 and "file not found" in result.output
