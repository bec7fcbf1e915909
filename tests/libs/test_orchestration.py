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
from handrail.messages import ReviewTrigger, StepCompleted, utcnow
from handrail.orchestration import approval_for_call, escalation_for
from handrail.tools import ToolSpec, default_registry

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


@pytest.mark.parametrize(("amount_usd", "rule"), [(120.0, None), (500.0, "manager-approval")])
def test_the_demo_rules_send_500_to_5000_to_a_manager_once_decided(amount_usd: float, rule: str | None) -> None:
    escalation = escalation_for(decide_step(amount_usd), EXPENSES, APPROVER)
    if rule is None:
        assert escalation is None
        return
    assert escalation is not None and escalation.rule is not None
    assert (escalation.trigger, escalation.rule.name, escalation.policy.role) == (ReviewTrigger.RULE, rule, "manager")
    assert escalation_for(decide_step(5000.01), EXPENSES, APPROVER) is None, "two directors approved it beforehand"


RECORD = default_registry().get("record_decision")


@pytest.mark.parametrize(
    ("amount_usd", "decision", "needs_directors"),
    [(5000.01, "needs_approval", True), (5000.0, "needs_approval", False), (9000.0, "approved", False)],
)
def test_the_director_rule_holds_a_ledger_entry_above_5000_for_two_directors(
    amount_usd: float, decision: str, needs_directors: bool
) -> None:
    assert RECORD is not None
    args = {"employee_id": "E1", "amount_usd": amount_usd, "decision": decision}
    escalation = approval_for_call(EXPENSES, APPROVER, "decide", RECORD.spec, args, {})
    assert (escalation is not None) == needs_directors
    if escalation is not None:
        assert escalation.rule is not None and escalation.rule.name == "director-approval"
        assert escalation.policy.role == "director" and escalation.policy.approvals_required == 2
    assert approval_for_call(EXPENSES, APPROVER, "intake", RECORD.spec, args, {}) is None, "bound to its step"


def test_flagged_tools_and_side_effects_on_approval_gates_need_a_person_before_the_call() -> None:
    wire = ToolSpec("wire_money", "pay", {"type": "object"}, requires_approval=True)
    escalation = approval_for_call(EXPENSES, APPROVER, "decide", wire, {}, {})
    assert escalation is not None and escalation.trigger == ReviewTrigger.TOOL_APPROVAL
    assert escalation.policy == EXPENSES.review and "wire_money" in escalation.reason
    gated = AgentSpec.model_validate({**APPROVER.model_dump(), "autonomy": Autonomy.APPROVAL_GATES})
    effect = ToolSpec("send_mail", "mail", {"type": "object"}, side_effect=True)
    lookup = ToolSpec("look_up", "read", {"type": "object"})
    assert approval_for_call(EXPENSES, APPROVER, "decide", effect, {}, {}) is None
    gate = approval_for_call(EXPENSES, gated, "decide", effect, {}, {})
    assert gate is not None and gate.trigger == ReviewTrigger.APPROVAL_GATE
    assert approval_for_call(EXPENSES, gated, "decide", lookup, {}, {}) is None, "no side effect, no gate"


def test_a_tool_rule_that_cannot_be_evaluated_fails_closed() -> None:
    assert RECORD is not None
    escalation = approval_for_call(EXPENSES, APPROVER, "decide", RECORD.spec, {"employee_id": "E1"}, {})
    assert escalation is not None and "could not be evaluated" in escalation.reason


def test_rules_apply_after_their_own_step_only() -> None:
    intake = decide_step(9000.0, step="intake", agent="expense-intake")
    assert escalation_for(intake, EXPENSES, CONTRACTS.agents["expense-intake"]) is None


def test_a_rule_that_cannot_be_evaluated_fails_closed() -> None:
    workflow = _with_rules(EXPENSES, [{"name": "typo", "when": "output.amount_ust > 1.0", "reason": "r"}])
    escalation = escalation_for(decide_step(10.0), workflow, APPROVER)
    assert escalation is not None and "rule 'typo' could not be evaluated" in escalation.reason
    assert "amount_ust" in escalation.reason


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
    escalation = escalation_for(decide_step(10.0, **changes), EXPENSES, APPROVER)
    assert (escalation is not None and escalation.trigger == ReviewTrigger.LOW_CONFIDENCE) == low
    if low:
        assert escalation is not None and "below agent expense-approver's floor 0.70" in escalation.reason


def test_an_agent_on_approval_gates_has_every_step_reviewed() -> None:
    gated = AgentSpec.model_validate({**APPROVER.model_dump(), "autonomy": Autonomy.APPROVAL_GATES})
    escalation = escalation_for(decide_step(10.0), EXPENSES, gated)
    assert escalation is not None and escalation.trigger == ReviewTrigger.APPROVAL_GATE


def test_the_effective_level_overrides_the_agents_configured_one() -> None:
    """An override (``handrail autonomy set``) is what counts, up or down, whatever agents.yaml says."""
    effect = ToolSpec("send_mail", "mail", {"type": "object"}, side_effect=True)
    gates, audit = Autonomy.APPROVAL_GATES, Autonomy.AUDIT_BASED
    gate = approval_for_call(EXPENSES, APPROVER, "decide", effect, {}, {}, gates)
    assert gate is not None and gate.trigger == ReviewTrigger.APPROVAL_GATE
    step = escalation_for(decide_step(10.0), EXPENSES, APPROVER, gates)
    assert step is not None and step.trigger == ReviewTrigger.APPROVAL_GATE
    gated = AgentSpec.model_validate({**APPROVER.model_dump(), "autonomy": gates})
    assert approval_for_call(EXPENSES, gated, "decide", effect, {}, {}, Autonomy.EXCEPTION_BASED) is None
    assert escalation_for(decide_step(10.0), EXPENSES, gated, audit) is None


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
