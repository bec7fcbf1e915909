"""When a finished step needs a person: CEL escalation rules, approval tools, confidence floors, approval gates."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from handrail.contracts import AgentSpec, Autonomy, WorkflowSpec, evaluate, load_contracts
from handrail.contracts.expressions import ExpressionError
from handrail.errors import ContractError
from handrail.hashing import context_hash
from handrail.messages import Decision, ReviewTrigger, StepCompleted, utcnow
from handrail.orchestration import escalation_for
from handrail.tools import Tool, ToolRegistry, ToolSpec, default_registry

CONFIG = Path(__file__).resolve().parents[2] / "config"
CONTRACTS = load_contracts(CONFIG, default_registry().names())
EXPENSES = CONTRACTS.workflows["expense-approval"]
APPROVER = CONTRACTS.agents["expense-approver"]


def decide_step(amount_usd: float, **changes: Any) -> StepCompleted:
    output = {
        "decision": "needs_approval" if amount_usd >= 500 else "approved",
        "required_approver": "manager",
        "reasons": [],
        "amount_usd": amount_usd,
        "employee_id": "E100",
        **changes.pop("output", {}),
    }
    context = {"input": {"amount": amount_usd}, "steps": {"decide": output}}
    fields: dict[str, Any] = {
        "message_id": "m-1",
        "task_id": "t-1",
        "workflow": "expense-approval",
        "step": "decide",
        "step_index": 1,
        "attempt": 1,
        "agent": "expense-approver",
        "goal": "decide",
        "output": output,
        "context": context,
        "context_hash": context_hash(context),
        "parent_hash": "0" * 64,
        "patch": [],
        "finished_at": utcnow(),
        **changes,
    }
    return StepCompleted(**fields)


@pytest.mark.parametrize(
    ("amount_usd", "rule", "role", "approvals"),
    [
        (120.0, None, None, None),
        (500.0, "manager-approval", "manager", 1),
        (5000.01, "director-approval", "director", 2),
    ],
)
def test_the_demo_rules_send_500_to_5000_to_a_manager_and_above_to_two_directors(
    amount_usd: float, rule: str | None, role: str | None, approvals: int | None
) -> None:
    escalation = escalation_for(decide_step(amount_usd), EXPENSES, APPROVER, default_registry())
    if rule is None:
        assert escalation is None
        return
    assert escalation is not None and escalation.rule is not None
    assert (escalation.trigger, escalation.rule.name, escalation.policy.role) == (ReviewTrigger.RULE, rule, role)
    assert escalation.policy.approvals_required == approvals


def test_rules_apply_after_their_own_step_only() -> None:
    intake = decide_step(9000.0, step="intake", agent="expense-intake")
    assert escalation_for(intake, EXPENSES, CONTRACTS.agents["expense-intake"], default_registry()) is None


def test_a_rule_that_cannot_be_evaluated_fails_closed() -> None:
    workflow = _with_rules(EXPENSES, [{"name": "typo", "when": "output.amount_ust > 1.0", "reason": "r"}])
    escalation = escalation_for(decide_step(10.0), workflow, APPROVER, default_registry())
    assert escalation is not None and "rule 'typo' could not be evaluated" in escalation.reason
    assert "amount_ust" in escalation.reason


def test_a_tool_flagged_for_approval_sends_the_step_to_a_person() -> None:
    async def wire(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {}

    tools = ToolRegistry([Tool(ToolSpec("wire_money", "pay", {"type": "object"}, requires_approval=True), wire)])
    used = Decision(kind="tool_call", name="wire_money", outcome="ok", latency_ms=1)
    refused = Decision(kind="tool_call", name="wire_money", outcome="rejected", latency_ms=1)
    escalation = escalation_for(decide_step(10.0, decisions=[used]), EXPENSES, APPROVER, tools)
    assert escalation is not None and escalation.trigger == ReviewTrigger.TOOL_APPROVAL
    assert escalation.policy == EXPENSES.review and "wire_money" in escalation.reason
    assert escalation_for(decide_step(10.0, decisions=[refused]), EXPENSES, APPROVER, tools) is None, "it never ran"


@pytest.mark.parametrize(
    ("changes", "low"),
    [
        ({"confidence": 0.5}, True),
        ({"confidence": 0.9}, False),
        ({"output": {"confidence": 0.2}}, True),
        ({"output": {"confidence": True}}, False),
        ({}, False),
    ],
)
def test_confidence_below_the_agents_floor_sends_the_step_to_a_person(changes: dict[str, Any], low: bool) -> None:
    escalation = escalation_for(decide_step(10.0, **changes), EXPENSES, APPROVER, default_registry())
    assert (escalation is not None and escalation.trigger == ReviewTrigger.LOW_CONFIDENCE) == low
    if low:
        assert escalation is not None and "below agent expense-approver's floor 0.70" in escalation.reason


def test_an_agent_on_approval_gates_has_every_step_reviewed() -> None:
    gated = AgentSpec.model_validate({**APPROVER.model_dump(), "autonomy": Autonomy.APPROVAL_GATES})
    escalation = escalation_for(decide_step(10.0), EXPENSES, gated, default_registry())
    assert escalation is not None and escalation.trigger == ReviewTrigger.APPROVAL_GATE


def test_cel_evaluates_over_output_and_context_and_insists_on_a_boolean() -> None:
    scope = {"output": {"amount_usd": 600}, "context": {"steps": {"intake": {"employee": {"department": "sales"}}}}}
    assert evaluate('output.amount_usd > 500.0 && context.steps.intake.employee.department == "sales"', scope)
    assert not evaluate('has(output.flag) && output.flag == "x"', scope)
    with pytest.raises(ExpressionError, match="not a boolean"):
        evaluate("output.amount_usd", scope)
    with pytest.raises(ExpressionError, match="missing"):
        evaluate("output.missing > 1", scope)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"name": "r", "when": "output.amount_usd >", "reason": "x"},
            r"field 'escalations.0.when': Value error, not a valid CEL expression",
        ),
        (
            {"name": "r", "step": "approve", "when": "true", "reason": "x"},
            r"'escalations.0.step': unknown step 'approve'",
        ),
        ({"name": "r", "when": "true", "reason": "x", "default_action": "ignore"}, r"'escalations.0.default_action'"),
        ({"name": "r", "when": "true", "reason": "x", "approvals_required": 0}, r"'escalations.0.approvals_required'"),
    ],
)
def test_a_bad_rule_stops_start_up_naming_the_file_the_workflow_and_the_field(
    tmp_path: Path, rule: dict[str, Any], expected: str
) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    data = yaml.safe_load((config / "workflows.yaml").read_text())
    data["workflows"]["expense-approval"]["escalations"] = [rule]
    (config / "workflows.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ContractError, match=r"workflows.yaml: workflow 'expense-approval': .*" + expected):
        load_contracts(config, default_registry().names())


def _with_rules(workflow: WorkflowSpec, rules: list[dict[str, Any]]) -> WorkflowSpec:
    return WorkflowSpec.model_validate({**workflow.model_dump(), "escalations": rules})
