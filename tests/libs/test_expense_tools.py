"""The demo's expense tools and the registry's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from handrail.tools import ToolContext, ToolFailure, default_registry
from handrail_dev.expenses import check_policy, convert_currency, ledger_tool, lookup_employee

LEDGER = "expense-ledger.jsonl"


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


async def test_the_ledger_records_a_key_once_whichever_process_asks(tmp_path: Path) -> None:
    first, second = ledger_tool(tmp_path), ledger_tool(tmp_path)  # two workers sharing the ledger file
    args = {"employee_id": "E100", "amount_usd": 12.0, "decision": "approved"}
    assert await first.run(args, ToolContext("t-1", "decide", "key-1")) == {"recorded": True, "ledger": LEDGER}
    again = await second.run(args, ToolContext("t-1", "decide", "key-1"))
    assert again.get("duplicate") is True, "the other process sees the entry the first appended"
    assert await second.run(args, ToolContext("t-2", "decide", "key-2")) == {"recorded": True, "ledger": LEDGER}
    assert first.lookup is not None and await first.lookup(ToolContext("t-2", "decide", "key-2")) is not None
    assert await first.lookup(ToolContext("t-3", "decide", "key-3")) is None
    assert len((tmp_path / LEDGER).read_text().splitlines()) == 2
