"""Budget top-ups, parked time and decisions Kafka refuses, on real Kafka, Redis and HTTP.

Approving a budget halt may grant the task more (bounded by the workflow's
``max_top_up`` and the reviewer's role, audited, rebuilt from Kafka); the time a
task waits for a person is given back to its wall clock unless the workflow
counts it. A decision that can never be carried out is dead-lettered once, with
its reason, not retried forever.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tests.fixtures.stack import Stack
from tests.services import test_review_bus as review_stack
from tests.services.test_review_bus import auth, claim, new_id, pending_review, show

from handrail.audit import AuditRecord
from handrail.audit.reader import read_key
from handrail.client import HandrailClient
from handrail.messages import ReviewDecided, TaskStatus

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

# The review tests' stack: the demo's contracts and the review test workflows, reviewers with tokens.
stack_config_dir = review_stack.stack_config_dir
http = review_stack.http


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """The review tests' settings, with the edit bounds above what Kafka takes in one record (1 MiB)."""
    return {
        **review_stack.review_env(),
        "HANDRAIL_REVIEW_MAX_EDIT_BYTES": str(4 * 1024 * 1024),
        "HANDRAIL_REVIEW_MAX_BODY_BYTES": str(8 * 1024 * 1024),
    }


async def audit_of(stack: Stack, task_id: str) -> list[AuditRecord]:
    return [
        AuditRecord.model_validate_json(v) for _, _, v in await read_key(stack.bootstrap, stack.topics.audit, task_id)
    ]


async def test_approving_a_budget_halt_with_a_top_up_lets_the_task_finish(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("tight-expense", claim(100), task_id=new_id("top-up"))
    review = await pending_review(http, task_id)
    detail = await show(http, review["review_id"])
    assert detail["trigger"] == "halt" and detail["halt_error_type"] == "budget_exhausted", detail
    url = f"/api/reviews/{review['review_id']}/approve"

    too_much = await http.post(url, headers=auth("ana"), json={"top_up": {"steps": 3}})
    assert too_much.status_code == 422 and too_much.json()["error"] == "invalid_top_up", too_much.text
    detail = too_much.json()["detail"]
    assert "at most 50000 tokens, 1 USD, 2 steps" in detail and "steps 3 > 2" in detail
    role_bound = await http.post(url, headers=auth("ops"), json={"top_up": {"steps": 2}})
    assert role_bound.status_code == 403 and "'reviewer' may grant at most" in role_bound.json()["detail"]
    bad = await http.post(url, headers=auth("ana"), json={"top_up": {"steps": -1}})
    assert bad.status_code == 422, bad.text

    granted = await http.post(url, headers=auth("ana"), json={"reason": "one more step", "top_up": {"steps": 1}})
    assert granted.status_code == 200, granted.text
    assert granted.json()["top_up"]["steps"] == 1

    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.COMPLETED, result
    records = await audit_of(stack, task_id)
    [grant] = [r for r in records if r.action == "budget.granted"]
    assert grant.actor == "reviewer:ana" and grant.details["top_up"]["steps"] == 1
    assert grant.details["agent"] == "expense-approver" and grant.reason == "one more step"
    [final] = [
        ReviewDecided.model_validate_json(v)
        for v in await stack.read(stack.topics.reviews_decided, task_id)
        if ReviewDecided.model_validate_json(v).decision
    ]
    assert final.top_up is not None and final.top_up.steps == 1, "the record says what was granted"


async def test_a_top_up_is_only_for_halts_and_only_where_the_workflow_allows_one(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(3000), task_id=new_id("no-top-up"))
    review = await pending_review(http, task_id)  # the manager rule, after the step: not a halt
    response = await http.post(
        f"/api/reviews/{review['review_id']}/approve", headers=auth("ana"), json={"top_up": {"steps": 1}}
    )
    assert response.status_code == 422 and "not of a halted step" in response.json()["detail"], response.text
    assert (await http.post(f"/api/reviews/{review['review_id']}/approve", headers=auth("ana"), json={})).is_success
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED


@pytest.mark.parametrize(("workflow", "ends"), [("slow-review", "completed"), ("slow-review-counted", "halted")])
async def test_time_parked_for_review_does_not_count_against_the_wall_clock_unless_the_workflow_says(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient, workflow: str, ends: str
) -> None:
    task_id = await client.submit(workflow, claim(100), task_id=new_id("parked"))
    review = await pending_review(http, task_id)
    await asyncio.sleep(9)  # longer than the task's whole wall clock (8 s)
    approved = await http.post(f"/api/reviews/{review['review_id']}/approve", headers=auth("ops"), json={})
    assert approved.status_code == 200, approved.text
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status.value == ends, result
    grants = [r for r in await audit_of(stack, task_id) if r.action == "budget.granted"]
    if ends == "completed":
        [grant] = grants
        assert grant.details["parked_ms"] >= 9000 and grant.details["wall_ms"] == 0
    else:
        assert grants == [] and result.error_type == "deadline_exceeded"


async def test_a_decision_kafka_refuses_is_dead_lettered_once_with_its_reason(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(3000), task_id=new_id("too-big"))
    review = await pending_review(http, task_id)
    context = (await show(http, review["review_id"]))["context"]
    context["steps"]["decide"]["notes"] = "x" * (2 * 1024 * 1024)  # over the 1 MiB Kafka takes
    edited = await http.post(f"/api/reviews/{review['review_id']}/edit", headers=auth("ana"), json={"context": context})
    assert edited.status_code == 200 and edited.json()["outcome"] == "dead_lettered", edited.text[:500]
    await asyncio.sleep(2.0)  # a few sweeps (every 0.2 s): none tries again
    [letter] = await stack.dead_letters_for(task_id)
    assert letter.error_type == "decision_not_carried_out" and "MessageSizeTooLarge" in letter.reason
    assert review["review_id"] in letter.reason
    assert await stack.results_for(task_id) == [], "the task stays parked: nothing was carried out"
