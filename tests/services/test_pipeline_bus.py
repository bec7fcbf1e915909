"""The walking skeleton on real Kafka and Redis: router, workers and validator as separate processes."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from tests.fixtures.metrics import scrape, total
from tests.fixtures.stack import Stack

from handrail.client import HandrailClient, follow, open_reader
from handrail.hashing import context_hash
from handrail.messages import HandoffEnvelope, ReviewRequested, StepCompleted, TaskStatus

pytestmark = [pytest.mark.bus, pytest.mark.timeout(180)]


def claim(amount: float, currency: str = "USD", employee_id: str = "E100") -> dict[str, Any]:
    return {"employee_id": employee_id, "amount": amount, "currency": currency, "description": "conference travel"}


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


async def test_an_expense_claim_completes_with_the_policy_decision(client: HandrailClient, stack: Stack) -> None:
    task_id = await client.submit("expense-approval", claim(120, "EUR"), task_id=new_id("happy"))
    result = await client.wait_for_result(task_id, timeout_s=60)

    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.output is not None
    assert result.output["decision"] == "approved" and "escalation" not in result.output
    assert result.steps == 2 and result.tokens > 0
    # The chain is intact: each hop's parent is the context hash the hop before it carried.
    steps = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
    assert [s.step for s in steps] == ["intake", "decide"]
    assert steps[1].parent_hash == steps[0].context_hash
    assert result.context_hash == steps[1].context_hash == context_hash(steps[1].context)
    assert steps[0].patch[0]["path"] == "/steps/intake"


@pytest.mark.parametrize(
    ("amount", "currency", "rule", "role"),
    [(1200, "USD", "manager-approval", "manager"), (9000, "GBP", "director-approval", "director")],
)
async def test_claims_that_need_a_person_are_parked_for_review_with_their_checkpoint(
    client: HandrailClient, stack: Stack, amount: float, currency: str, rule: str, role: str
) -> None:
    task_id = await client.submit("expense-approval", claim(amount, currency), task_id=new_id("parked"))
    for _ in range(60):
        requests = [
            ReviewRequested.model_validate_json(v) for v in await stack.read(stack.topics.reviews_requested, task_id)
        ]
        if requests:
            break
    [request] = requests
    assert (request.rule, request.role, request.trigger) == (rule, role, "rule")
    if role == "manager":  # the manager reviews the decided step
        assert request.checkpoint is not None and request.checkpoint.output["decision"] == "needs_approval"
        assert request.context_hash == request.checkpoint.context_hash
    else:  # two directors approve the ledger entry before it is written (tests/services/test_approval_bus.py)
        assert request.proposal is not None and request.proposal.tool == "record_decision"
        assert request.halted is not None and request.context_hash == request.halted.context_hash
    assert await stack.results_for(task_id) == [], "the task waits for a person (tests/services/test_review_bus.py)"


async def test_resubmitting_a_task_id_yields_one_task_and_one_result(client: HandrailClient, stack: Stack) -> None:
    task_id = new_id("twice")
    await client.submit("expense-approval", claim(50), task_id=task_id)
    await client.submit("expense-approval", claim(50), task_id=task_id)
    await client.wait_for_result(task_id, timeout_s=60)
    assert len(await stack.results_for(task_id, settle_s=2)) == 1


async def _assert_rejected(stack: Stack, client: HandrailClient, task_id: str, error_type: str, raw: bytes) -> None:
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.REJECTED
    assert result.error_type == error_type
    letters = await stack.dead_letters_for(task_id)
    assert len(letters) == 1
    letter = letters[0]
    assert letter.error_type == error_type and letter.source_topic == stack.topics.tasks
    assert base64.b64decode(letter.original) == raw
    assert letter.offset >= 0 and letter.partition >= 0
    assert letter.reason == result.reason


@pytest.mark.parametrize(
    ("label", "body", "error_type", "reason_part"),
    [
        ("not-json", lambda tid: b"\x00\x01 this is not json {", "malformed_message", "not valid JSON"),
        ("bad-schema", lambda tid: json.dumps({"task_id": tid, "input": {}}).encode(), "malformed_message", "workflow"),
        (
            "unknown-wf",
            lambda tid: json.dumps({"task_id": tid, "workflow": "payroll", "input": {}}).encode(),
            "unknown_workflow",
            "unknown workflow 'payroll'",
        ),
        (
            "bad-input",
            lambda tid: json.dumps({"task_id": tid, "workflow": "expense-approval", "input": claim(-5)}).encode(),
            "invalid_input",
            "input/amount",
        ),
        (
            "oversize",
            lambda tid: json.dumps(
                {"task_id": tid, "workflow": "expense-approval", "input": claim(5), "metadata": {"pad": "x" * 9000}}
            ).encode(),
            "task_too_large",
            "limit is 8192",
        ),
    ],
)
async def test_bad_input_is_dead_lettered_with_its_reason_and_ends_the_task(
    client: HandrailClient, stack: Stack, label: str, body: Any, error_type: str, reason_part: str
) -> None:
    task_id = new_id(label)
    raw = body(task_id)
    await client.publish_raw(raw, key=task_id)
    await _assert_rejected(stack, client, task_id, error_type, raw)
    assert reason_part in (await stack.dead_letters_for(task_id))[0].reason
    # The consumer kept running: the next valid task completes.
    ok = await client.submit("expense-approval", claim(10), task_id=new_id("after-" + label))
    assert (await client.wait_for_result(ok, timeout_s=60)).status == TaskStatus.COMPLETED


async def test_unidentifiable_garbage_is_dead_lettered_without_a_result(client: HandrailClient, stack: Stack) -> None:
    marker = new_id("garbage")
    await client.publish_raw(f"garbage {marker}".encode(), key=None)
    ok = await client.submit("expense-approval", claim(10), task_id=new_id("after-garbage"))
    assert (await client.wait_for_result(ok, timeout_s=60)).status == TaskStatus.COMPLETED
    values = await _all_values(stack, stack.topics.dlq)
    mine = [json.loads(v) for v in values if marker.encode() in base64.b64decode(json.loads(v)["original"])]
    assert len(mine) == 1 and mine[0]["error_type"] == "malformed_message" and "task_id" not in mine[0]


async def _all_values(stack: Stack, topic: str) -> list[bytes]:
    reader = await open_reader(stack.bootstrap, [topic], from_time_ms=0)
    try:
        return [r.value or b"" async for r in follow(reader, idle_timeout_s=1.0)]
    finally:
        await reader.stop()


async def _envelope_for(stack: Stack, agent: str, task_id: str) -> tuple[bytes, HandoffEnvelope]:
    for _ in range(60):
        values = await stack.read(stack.topics.agent(agent), task_id)
        if values:
            return values[-1], HandoffEnvelope.model_validate_json(values[-1])
    raise AssertionError(f"no envelope for {task_id} on agent.{agent}")


async def test_truncated_context_between_two_hops_is_caught(client: HandrailClient, stack: Stack) -> None:
    approver = "worker-expense-approver"
    stack.stop(approver)
    try:
        task_id = await client.submit("expense-approval", claim(700), task_id=new_id("truncated"))
        _, envelope = await _envelope_for(stack, "expense-approver", task_id)
        # The original is lost; a copy whose context lost the intake step's output arrives instead,
        # signed by its rightful sender (a sender's bug, not a forgery): the context hash catches it.
        await stack.skip_pending(stack.group("agent-expense-approver"), stack.topics.agent("expense-approver"))
        truncated_context = {**envelope.context, "steps": {}}
        forged = stack.signer("validator").sign(envelope.model_copy(update={"context": truncated_context})).to_bytes()
        await stack.produce(stack.topics.agent("expense-approver"), forged, key=task_id)
    finally:
        stack.start(approver)

    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.FAILED and result.error_type == "context_hash_mismatch"
    [letter] = await stack.dead_letters_for(task_id)
    assert letter.error_type == "context_hash_mismatch" and base64.b64decode(letter.original) == forged
    assert "truncated or altered" in letter.reason


async def test_replayed_stale_handoff_fails_on_its_parent_hash(client: HandrailClient, stack: Stack) -> None:
    approver = "worker-expense-approver"
    stack.stop(approver)
    try:
        task_id = await client.submit("expense-approval", claim(40), task_id=new_id("stale"))
        await _envelope_for(stack, "expense-approver", task_id)  # the task has moved past intake
        _, first = await _envelope_for(stack, "expense-intake", task_id)
        # Re-signed by the router itself (a replay by its own bug): only the parent hash can tell.
        replay = stack.signer("router").sign(first.model_copy(update={"message_id": str(uuid.uuid4())})).to_bytes()
        await stack.produce(stack.topics.agent("expense-intake"), replay, key=task_id)
        result = await client.wait_for_result(task_id, timeout_s=60)
    finally:
        stack.start(approver)
    assert result.status == TaskStatus.FAILED and result.error_type == "parent_hash_mismatch"
    [letter] = await stack.dead_letters_for(task_id)
    assert letter.error_type == "parent_hash_mismatch" and "not the last committed hash" in letter.reason
    # The original next hop, now stale, is skipped: still exactly one result.
    assert len(await stack.results_for(task_id, settle_s=3)) == 1


async def test_redelivery_after_a_crash_between_publish_and_commit_yields_one_result(
    client: HandrailClient, stack: Stack
) -> None:
    intake = "worker-expense-intake"
    stack.stop(intake)
    # This worker exits right after publishing its StepCompleted, before the offset commit.
    stack.start(intake, extra_env={"HANDRAIL_CHAOS_EXIT_AFTER_PUBLISH": "true"})
    task_id = await client.submit("expense-approval", claim(75), task_id=new_id("crash"))
    assert await stack.wait_exited(intake, timeout_s=30), "the chaos worker should have exited"
    assert "chaos: exiting after publishing" in stack.log(intake)

    result = await client.wait_for_result(task_id, timeout_s=90)  # the published output was not lost
    assert result.status == TaskStatus.COMPLETED

    stack.start(intake)  # redelivery: the offset was never committed, so the step runs again
    intake_steps: list[StepCompleted] = []
    for _ in range(60):  # the dead member's session must time out before the group rebalances
        steps = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
        intake_steps = [s for s in steps if s.step == "intake"]
        if len(intake_steps) == 2:
            break
    assert len(intake_steps) == 2, "the step ran again after the crash"
    assert intake_steps[0].message_id == intake_steps[1].message_id, "and republished under the same id"
    assert len(await stack.results_for(task_id, settle_s=3)) == 1


async def test_a_workflow_nobody_declared_mints_no_time_series(client: HandrailClient, stack: Stack) -> None:
    """The ``workflow`` label takes only declared names: anything else a submitter sends counts as unknown."""
    invented = f"wf-{uuid.uuid4().hex[:8]}"
    task_id = new_id("invented")
    await client.publish_raw(json.dumps({"task_id": task_id, "workflow": invented, "input": {}}).encode(), key=task_id)
    assert (await client.wait_for_result(task_id, timeout_s=60)).error_type == "unknown_workflow"
    samples = await scrape(stack, "router")
    assert not [name for name in samples if invented in name]
    assert total(samples, "handrail_tasks_finished_total", workflow="unknown", status="rejected") >= 1


async def test_a_service_reports_its_dependencies_and_its_consumer_lag(stack: Stack) -> None:
    """What the Redis, Kafka and lag alerts read: every service probes both and measures its own lag."""
    samples = await scrape(stack, "router")
    assert total(samples, "handrail_dependency_up", dependency="kafka") == 1
    assert total(samples, "handrail_dependency_up", dependency="redis") == 1
    assert [name for name in samples if name.startswith("handrail_consumer_lag_messages{") and "router:" in name]
