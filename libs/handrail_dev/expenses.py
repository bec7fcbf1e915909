"""The demo's expense tools: local and deterministic, with real rules.

Amounts are compared in US dollars: under 500 is approved automatically,
500 to 5000 needs a manager, above 5000 a director.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from handrail.tools.registry import Tool, ToolContext, ToolFailure, ToolSpec

#: The demo company's directory. A real deployment calls its HR system here.
EMPLOYEES: dict[str, dict[str, Any]] = {
    "E100": {"name": "Ada Park", "department": "engineering", "manager_id": "E900", "active": True},
    "E101": {"name": "Ben Ode", "department": "sales", "manager_id": "E901", "active": True},
    "E102": {"name": "Chi Lin", "department": "finance", "manager_id": "E900", "active": True},
    "E103": {"name": "Dev Rao", "department": "sales", "manager_id": "E901", "active": False},
    "E900": {"name": "Eve Moss", "department": "engineering", "manager_id": "E999", "active": True},
    "E901": {"name": "Fay Nunez", "department": "sales", "manager_id": "E999", "active": True},
}

#: USD per unit, fixed so the demo is reproducible; a deployment would call a rates service.
USD_RATES: dict[str, float] = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "CHF": 1.13, "JPY": 0.0067}

#: The approval thresholds of the expense policy, in USD.
AUTO_APPROVE_BELOW_USD = 500.0
MANAGER_UP_TO_USD = 5000.0


async def lookup_employee(args: dict[str, Any], ctx: ToolContext | None = None) -> dict[str, Any]:
    """Return the directory entry of ``employee_id``."""
    employee_id = args["employee_id"]
    entry = EMPLOYEES.get(employee_id)
    if entry is None:
        raise ToolFailure(f"no employee with id {employee_id!r}")
    return {"employee_id": employee_id, **entry}


async def convert_currency(args: dict[str, Any], ctx: ToolContext | None = None) -> dict[str, Any]:
    """Convert ``amount`` in ``currency`` to US dollars."""
    currency = args["currency"].upper()
    rate = USD_RATES.get(currency)
    if rate is None:
        raise ToolFailure(f"no exchange rate for {currency!r}; known: {sorted(USD_RATES)}")
    return {"amount_usd": round(args["amount"] * rate, 2), "rate": rate, "currency": currency}


async def check_policy(args: dict[str, Any], ctx: ToolContext | None = None) -> dict[str, Any]:
    """Apply the expense policy to a claim and say who must approve it."""
    amount_usd = float(args["amount_usd"])
    reasons: list[str] = []
    if not args.get("employee_active", True):
        return {"decision": "rejected", "required_approver": "none", "reasons": ["employee is not active"]}
    if amount_usd < AUTO_APPROVE_BELOW_USD:
        decision, approver = "approved", "none"
        reasons.append(f"{amount_usd:.2f} USD is under the {AUTO_APPROVE_BELOW_USD:.0f} USD auto-approval limit")
    elif amount_usd <= MANAGER_UP_TO_USD:
        decision, approver = "needs_approval", "manager"
        reasons.append(f"{amount_usd:.2f} USD needs a manager (500 to 5000 USD)")
    else:
        decision, approver = "needs_approval", "director"
        reasons.append(f"{amount_usd:.2f} USD needs a director (above 5000 USD)")
    return {"decision": decision, "required_approver": approver, "reasons": reasons}


_EMPLOYEE_RESULT = {
    "type": "object",
    "required": ["employee_id", "name", "department", "manager_id", "active"],
    "properties": {
        "employee_id": {"type": "string"},
        "name": {"type": "string"},
        "department": {"type": "string"},
        "manager_id": {"type": "string"},
        "active": {"type": "boolean"},
    },
}

TOOLS = [
    Tool(
        ToolSpec(
            name="lookup_employee",
            description="Look up an employee in the company directory.",
            args_schema={
                "type": "object",
                "required": ["employee_id"],
                "properties": {"employee_id": {"type": "string", "minLength": 1}},
                "additionalProperties": False,
            },
            result_schema=_EMPLOYEE_RESULT,
        ),
        lookup_employee,
    ),
    Tool(
        ToolSpec(
            name="convert_currency",
            description="Convert an amount to US dollars at the company's rate.",
            args_schema={
                "type": "object",
                "required": ["amount", "currency"],
                "properties": {
                    "amount": {"type": "number", "exclusiveMinimum": 0},
                    "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
                },
                "additionalProperties": False,
            },
            result_schema={
                "type": "object",
                "required": ["amount_usd", "rate", "currency"],
                "properties": {
                    "amount_usd": {"type": "number"},
                    "rate": {"type": "number"},
                    "currency": {"type": "string"},
                },
            },
        ),
        convert_currency,
    ),
    Tool(
        ToolSpec(
            name="check_policy",
            description="Apply the expense policy: approve, or say which role must approve.",
            args_schema={
                "type": "object",
                "required": ["amount_usd"],
                "properties": {
                    "amount_usd": {"type": "number", "minimum": 0},
                    "employee_active": {"type": "boolean"},
                    "department": {"type": "string"},
                },
                "additionalProperties": False,
            },
            result_schema={
                "type": "object",
                "required": ["decision", "required_approver", "reasons"],
                "properties": {
                    "decision": {"enum": ["approved", "needs_approval", "rejected"]},
                    "required_approver": {"enum": ["none", "manager", "director"]},
                    "reasons": {"type": "array", "items": {"type": "string"}},
                },
            },
        ),
        check_policy,
    ),
]


def tools(data_dir: Path) -> list[Tool]:
    """The demo's tools, for the ``handrail.tools`` entry point (``handrail.tools.default_registry``)."""
    return [*TOOLS, ledger_tool(data_dir)]


def ledger_tool(data_dir: Path) -> Tool:
    """``record_decision``: append the decision to the expense ledger - a real, once-only side effect."""
    ledger = data_dir / "expense-ledger.jsonl"
    index = _LedgerIndex()

    async def record_decision(args: dict[str, Any], ctx: ToolContext | None = None) -> dict[str, Any]:
        entry = {
            **args,
            "idempotency_key": ctx.idempotency_key if ctx else None,
            "task_id": ctx.task_id if ctx else None,
        }
        # As a payments or ledger API does: one entry per idempotency key, whoever asks and how often.
        with _locked(ledger) as out:
            if entry["idempotency_key"] is not None and index.entry_for(out, entry["idempotency_key"]) is not None:
                return {"recorded": True, "ledger": ledger.name, "duplicate": True}
            out.write(json.dumps(entry, sort_keys=True) + "\n")
        return {"recorded": True, "ledger": ledger.name}

    async def was_recorded(ctx: ToolContext) -> dict[str, Any] | None:
        with _locked(ledger) as out:
            found = index.entry_for(out, ctx.idempotency_key)
        return None if found is None else {"recorded": True, "ledger": ledger.name}

    return Tool(
        ToolSpec(
            name="record_decision",
            description="Record the decision on an expense claim in the company's ledger.",
            args_schema={
                "type": "object",
                "required": ["employee_id", "amount_usd", "decision"],
                "properties": {
                    "employee_id": {"type": "string"},
                    "amount_usd": {"type": "number"},
                    "decision": {"type": "string"},
                },
                "additionalProperties": False,
            },
            result_schema={"type": "object", "required": ["recorded"], "properties": {"recorded": {"type": "boolean"}}},
            side_effect=True,
        ),
        record_decision,
        lookup=was_recorded,
    )


@contextlib.contextmanager
def _locked(ledger: Path) -> Iterator[TextIO]:
    """The ledger open for reading and appending under an exclusive lock (workers of every process share it)."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a+") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        try:
            yield out
        finally:
            fcntl.flock(out, fcntl.LOCK_UN)


class _LedgerIndex:
    """The ledger's entries by idempotency key, read incrementally: each look-up (under the file's lock)
    first reads only the lines appended since the last one, by any process."""

    def __init__(self) -> None:
        self._read_to = 0
        self._entries: dict[str, dict[str, Any]] = {}

    def entry_for(self, out: TextIO, idempotency_key: str) -> dict[str, Any] | None:
        out.seek(0, 2)
        if out.tell() < self._read_to:  # the file was replaced (a fresh run dir): read it again
            self._read_to, self._entries = 0, {}
        out.seek(self._read_to)
        for line in out:
            entry = json.loads(line)
            if isinstance(entry.get("idempotency_key"), str):
                self._entries.setdefault(entry["idempotency_key"], entry)
        self._read_to = out.tell()
        found = self._entries.get(idempotency_key)
        return dict(found) if found is not None else None
