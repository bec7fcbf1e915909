"""Approval before the action, on real Kafka, Redis and HTTP: a proposed call runs only once people approved it.

The demo's director rule is bound to ``record_decision``: the ledger entry of a
claim above 5000 USD is the call two directors must approve before it is made.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest
from tests.fixtures.stack import PROJECT_ROOT, Stack
from tests.services import test_review_bus as review_stack
from tests.services.test_limits_bus import ledger_entries
from tests.services.test_review_bus import auth, claim, new_id, pending_review, requests_for, show

from handrail.audit import AuditRecord
from handrail.audit.reader import read_key
from handrail.autonomy.levels import DEFAULT_TTL_S
from handrail.client import HandrailClient
from handrail.messages import TaskStatus

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

# The review tests' stack: the demo's contracts, reviewers with tokens, and a fast review sweep.
stack_config_dir = review_stack.stack_config_dir
stack_env = review_stack.stack_env
http = review_stack.http


async def _approve(http: httpx.AsyncClient, review_id: str, who: str, reason: str = "ok") -> httpx.Response:
    return await http.post(f"/api/reviews/{review_id}/approve", headers=auth(who), json={"reason": reason})


async def test_no_ledger_entry_before_two_directors_approve_and_exactly_one_after(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(8000, "GBP"), task_id=new_id("pre-approval"))
    review = await pending_review(http, task_id)
    detail = await show(http, review["review_id"])
    proposal = detail["proposal"]
    assert proposal["tool"] == "record_decision" and proposal["arguments"]["decision"] == "needs_approval"
    assert detail["rule"] == "director-approval" and detail["approvals_required"] == 2
    assert [d["name"] for d in detail["decisions"] if d["kind"] == "tool_call"] == ["check_policy"]
    assert ledger_entries(stack, task_id) == [], "the call waits for the directors"

    assert (await _approve(http, review["review_id"], "dan")).status_code == 200
    await asyncio.sleep(1.0)
    assert ledger_entries(stack, task_id) == [], "one of two directors is not enough"
    assert await stack.results_for(task_id) == []
    assert (await _approve(http, review["review_id"], "dora")).status_code == 200

    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.COMPLETED, result
    [entry] = ledger_entries(stack, task_id)
    assert entry["idempotency_key"] == proposal["idempotency_key"]
    [request] = await requests_for(stack, task_id)
    assert request.proposal is not None and request.checkpoint is None, "one review: the call, not the step after it"


async def test_a_rejected_call_never_runs_and_the_task_ends_rejected(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(9500, "GBP"), task_id=new_id("pre-reject"))
    review = await pending_review(http, task_id)
    response = await http.post(
        f"/api/reviews/{review['review_id']}/reject", headers=auth("dan"), json={"reason": "no receipts"}
    )
    assert response.status_code == 200, response.text
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.REJECTED and result.error_type == "review_rejected"
    assert result.reason is not None and "record_decision" in result.reason and "never ran" in result.reason
    assert ledger_entries(stack, task_id) == []


async def test_edited_arguments_are_checked_against_the_tools_schema_and_what_runs_is_the_edit(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(7000, "GBP"), task_id=new_id("pre-edit"))
    review_id = (await pending_review(http, task_id))["review_id"]
    arguments = (await show(http, review_id))["proposal"]["arguments"]
    bad = await http.post(
        f"/api/reviews/{review_id}/edit",
        headers=auth("dan"),
        json={"arguments": {**arguments, "amount_usd": "lots"}},
    )
    assert bad.status_code == 422 and "amount_usd" in bad.text, bad.text
    context = await http.post(f"/api/reviews/{review_id}/edit", headers=auth("dan"), json={"context": {}})
    assert context.status_code == 422 and "arguments" in context.text, context.text
    edited = {**arguments, "decision": "approved_by_directors"}
    ok = await http.post(f"/api/reviews/{review_id}/edit", headers=auth("dan"), json={"arguments": edited})
    assert ok.status_code == 200, ok.text
    shown = await show(http, review_id, "dora")
    assert shown["arguments"] == edited, "the second director sees what will run, not the model's first try"
    assert shown["proposal"]["arguments"] == arguments
    assert (await _approve(http, review_id, "dora")).status_code == 200
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.COMPLETED, result
    [entry] = ledger_entries(stack, task_id)
    assert entry["decision"] == "approved_by_directors"


async def test_a_worker_killed_between_approval_and_the_call_makes_it_exactly_once(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    approver = "worker-expense-approver"
    task_id = await client.submit("expense-approval", claim(8800, "GBP"), task_id=new_id("pre-kill"))
    review_id = (await pending_review(http, task_id))["review_id"]
    stack.stop(approver)
    stack.start(approver, extra_env={"HANDRAIL_CHAOS_EXIT_BEFORE_TOOL": "record_decision"})
    try:
        for who in ("dan", "dora"):
            assert (await _approve(http, review_id, who)).status_code == 200
        assert await stack.wait_exited(approver, timeout_s=60)
        assert "chaos: exiting right before record_decision runs" in stack.log(approver)
        assert ledger_entries(stack, task_id) == []
    finally:
        stack.start(approver)  # the approved step is redelivered: the call, claimed and in doubt, is looked up
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED, result
    assert len(ledger_entries(stack, task_id)) == 1, "the approved call ran twice, or never"


def _autonomy(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "handrail_cli", "autonomy", *args],
        capture_output=True, text=True, timeout=90, cwd=PROJECT_ROOT, env={**os.environ, **stack.env}, check=False,
    )  # fmt: skip


async def test_an_autonomy_override_gates_the_agents_side_effects_in_the_running_fleet(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    """`handrail autonomy set` to approval-gates: within the level's cache time, every replica asks first."""
    agent, workflow = "expense-approver", "expense-approval"
    changed = _autonomy(stack, "set", agent, workflow, "approval-gates", "--reason", "new ledger system")
    assert changed.returncode == 0, changed.stderr
    try:
        await asyncio.sleep(DEFAULT_TTL_S + 1)  # every process has read the level again
        task_id = await client.submit("expense-approval", claim(120), task_id=new_id("gated"))
        review = await pending_review(http, task_id)
        detail = await show(http, review["review_id"])
        assert detail["trigger"] == "approval_gate" and detail["proposal"]["tool"] == "record_decision", detail
        assert ledger_entries(stack, task_id) == [], "a small claim too waits for a person now"
        assert (await _approve(http, review["review_id"], "ana")).status_code == 200
        # Approval gates review the finished step as well.
        step_review = await pending_review(http, task_id)
        assert step_review["review_id"] != review["review_id"]
        assert (await _approve(http, step_review["review_id"], "ana")).status_code == 200
        assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED
        assert len(ledger_entries(stack, task_id)) == 1
    finally:
        cleared = _autonomy(stack, "clear", agent, workflow, "--reason", "back to the config")
        assert cleared.returncode == 0, cleared.stderr
        await asyncio.sleep(DEFAULT_TTL_S + 1)  # the other tests of this stack see the config's level again
    ungated = await client.submit("expense-approval", claim(130), task_id=new_id("ungated"))
    assert (await client.wait_for_result(ungated, timeout_s=60)).status == TaskStatus.COMPLETED
    [audited_set, audited_clear] = [
        AuditRecord.model_validate_json(value)
        for _, _, value in await read_key(stack.bootstrap, stack.topics.audit, f"autonomy/{agent}/{workflow}")
    ][-2:]
    assert audited_set.action == "autonomy.changed" and audited_set.details["to"] == "approval-gates"
    assert audited_clear.action == "autonomy.cleared" and audited_clear.details["to"] == "exception-based"
