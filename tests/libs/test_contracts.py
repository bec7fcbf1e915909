"""Loading agents.yaml and workflows.yaml: the shipped files load, bad ones say exactly what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from handrail.contracts import load_contracts
from handrail.errors import ContractError
from handrail.tools import default_registry

CONFIG = Path(__file__).resolve().parents[2] / "config"
TOOLS = default_registry().names()


def test_shipped_contracts_load() -> None:
    contracts = load_contracts(CONFIG, TOOLS)
    assert set(contracts.agents) == {
        "expense-intake", "expense-approver", "vendor-checker", "risk-classifier", "vendor-writer",
    }  # fmt: skip
    workflow = contracts.workflows["expense-approval"]
    assert [s.agent for s in workflow.steps] == ["expense-intake", "expense-approver"]
    vendors = contracts.workflows["vendor-due-diligence"]
    assert vendors.agents == ("vendor-checker", "risk-classifier", "vendor-writer")
    assert [s.name for s in vendors.steps] == ["screen", "checks", "risk", "summary"]


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(CONFIG, tmp_path / "config")
    return tmp_path / "config"


def _edit(path: Path, change: object) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["agents"]["expense-intake"].update(tools=["lookup_employee", "wire_money"]),
            r"agents.yaml: agent 'expense-intake': field 'tools': unknown tool 'wire_money'",
        ),
        (
            lambda d: d["agents"]["expense-intake"]["limits"].update(max_tokens=-1),
            r"agents.yaml: agent 'expense-intake': field 'limits.max_tokens'",
        ),
        (
            lambda d: d["agents"]["expense-intake"]["limits"].update(max_tokns=10),
            r"agents.yaml: agent 'expense-intake': field 'limits.max_tokns': Extra inputs are not permitted",
        ),
        (
            lambda d: d["agents"]["expense-approver"].update(autonomy="yolo"),
            r"agent 'expense-approver': field 'autonomy'",
        ),
        (lambda d: d["agents"]["expense-approver"].update(plan=[]), r"agent 'expense-approver'.*needs a `plan`"),
        (
            lambda d: d["agents"]["expense-intake"].update(observation_deny_patterns=["ignore (previous"]),
            r"agent 'expense-intake': field 'observation_deny_patterns': Value error, pattern 0 'ignore \(previous' "
            r"is not a valid regular expression: missing \)",
        ),
        (
            lambda d: d["agents"]["expense-intake"].update(observation_deny_patterns=["ok", ""]),
            r"field 'observation_deny_patterns': Value error, pattern 1 is empty: it would match every observation",
        ),
        (
            lambda d: d["agents"]["expense-intake"].update(tool_policies={"wire_money": {"max_attempts": 2}}),
            r"agent 'expense-intake': field 'tool_policies': Value error, 'wire_money' is not one of the agent's tools",
        ),
        (
            lambda d: d["agents"]["expense-intake"].update(tool_defaults={"max_attempts": 0}),
            r"agent 'expense-intake': field 'tool_defaults.max_attempts': Input should be greater than or equal to 1",
        ),
        (
            lambda d: d["agents"]["expense-intake"].update(tool_defaults={"retries": 3}),
            r"field 'tool_defaults.retries': Extra inputs are not permitted",
        ),
        (
            lambda d: d["agents"]["expense-intake"].update(tool_policies={"lookup_employee": {"on_auth": "ignore"}}),
            r"field 'tool_policies.lookup_employee.on_auth': Input should be 'fail' or 'halt'",
        ),
        (
            lambda d: d["agents"]["expense-intake"].update(tool_policies={"lookup_employee": {"max_delay_s": 0.01}}),
            r"field 'tool_policies': Value error, lookup_employee: .*max_delay_s \(0.01\) is below base_delay_s",
        ),
    ],
)
def test_bad_agents_file_names_file_agent_and_field(tmp_path: Path, change: object, expected: str) -> None:
    config = _copy(tmp_path)
    _edit(config / "agents.yaml", change)
    with pytest.raises(ContractError, match=expected):
        load_contracts(config, TOOLS)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["workflows"]["expense-approval"]["steps"][1].update(agent="ghost"),
            r"workflows.yaml: workflow 'expense-approval': field 'steps.1.agent': unknown agent 'ghost'",
        ),
        (
            lambda d: d["workflows"]["expense-approval"]["steps"][0].update(output_schema={"type": "nope"}),
            r"field 'steps.0.output_schema': not a valid JSON Schema",
        ),
        (
            lambda d: d["workflows"]["expense-approval"].pop("input_schema"),
            r"workflow 'expense-approval': field 'input_schema': Field required",
        ),
    ],
)
def test_bad_workflows_file_names_file_workflow_and_field(tmp_path: Path, change: object, expected: str) -> None:
    config = _copy(tmp_path)
    _edit(config / "workflows.yaml", change)
    with pytest.raises(ContractError, match=expected):
        load_contracts(config, TOOLS)


def test_not_yaml_and_missing_file_are_clear(tmp_path: Path) -> None:
    config = _copy(tmp_path)
    (config / "agents.yaml").write_text("agents: [unclosed")
    with pytest.raises(ContractError, match=r"agents\.yaml: not valid YAML"):
        load_contracts(config, TOOLS)
    (config / "agents.yaml").unlink()
    with pytest.raises(ContractError, match=r"agents\.yaml: file not found"):
        load_contracts(config, TOOLS)
