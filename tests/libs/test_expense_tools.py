"""The demo's expense tools and the registry's checks."""

from __future__ import annotations

import pytest

from handrail.tools import ToolFailure, default_registry
from handrail.tools.expenses import check_policy, convert_currency, lookup_employee


@pytest.mark.parametrize(
    ("amount_usd", "decision", "approver"),
    [
        (0.01, "approved", "none"),
        (499.99, "approved", "none"),
        (500, "needs_approval", "manager"),
        (5000, "needs_approval", "manager"),
        (5000.01, "needs_approval", "director"),
    ],
)
async def test_policy_thresholds(amount_usd: float, decision: str, approver: str) -> None:
    result = await check_policy({"amount_usd": amount_usd, "employee_active": True})
    assert (result["decision"], result["required_approver"]) == (decision, approver)


async def test_inactive_employee_is_rejected() -> None:
    assert (await check_policy({"amount_usd": 10, "employee_active": False}))["decision"] == "rejected"


async def test_lookup_and_convert() -> None:
    assert (await lookup_employee({"employee_id": "E100"}))["department"] == "engineering"
    assert (await convert_currency({"amount": 100, "currency": "eur"}))["amount_usd"] == 108.0
    with pytest.raises(ToolFailure, match="no employee"):
        await lookup_employee({"employee_id": "E404"})
    with pytest.raises(ToolFailure, match="no exchange rate"):
        await convert_currency({"amount": 1, "currency": "XXX"})


def test_registry_rejects_unknown_forbidden_and_ill_typed_calls() -> None:
    registry = default_registry()
    allowed = ["lookup_employee"]
    assert registry.check_call("lookup_employee", {"employee_id": "E1"}, allowed) is None
    unknown = registry.check_call("delete_database", {}, allowed)
    assert unknown is not None and unknown.code == "unknown_tool" and unknown.allowed_tools == allowed
    forbidden = registry.check_call("check_policy", {"amount_usd": 1}, allowed)
    assert forbidden is not None and forbidden.code == "tool_not_allowed"
    bad = registry.check_call("lookup_employee", {"employee_id": 7}, allowed)
    assert bad is not None and bad.code == "invalid_arguments" and "employee_id" in bad.message
    not_object = registry.check_call("lookup_employee", "E1", allowed)
    assert not_object is not None and not_object.code == "invalid_arguments"
    assert unknown.as_observation()["error"]["code"] == "unknown_tool"
