"""The lifecycle's transitions on real Redis: what each one writes, in which order, and only once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from tests.fixtures.publishing import CapturingPublisher

from handrail.audit import AuditLog, AuditRecord
from handrail.bus.publisher import AUDIT_HEAD_HEADER
from handrail.lifecycle import End, HandOff, Lifecycle, Open, Resume, TaskBudget, first_handoff, step_completed
from handrail.messages import (
    BudgetSnapshot,
    HandoffEnvelope,
    ReviewAction,
    ReviewDecided,
    ReviewRequested,
    ReviewTrigger,
    TaskResult,
    TaskStatus,
    utcnow,
)
from handrail.state import TaskStore, connect_redis, generation
from handrail.state.budgets import Amount, BudgetStore, Caps
from handrail.topics import Topics

pytestmark = pytest.mark.bus

TOPICS = Topics("t.")


@pytest.fixture
async def lifecycle(redis_url: str) -> AsyncIterator[tuple[Lifecycle, CapturingPublisher]]:
    redis = connect_redis(redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(redis, prefix)
    sink = CapturingPublisher()
    audit = AuditLog(redis, sink, TOPICS.audit, prefix=prefix)  # type: ignore[arg-type]
    yield (
        Lifecycle("router", TaskStore(redis, prefix), BudgetStore(redis, prefix), sink, TOPICS, audit),  # type: ignore[arg-type]
        sink,
    )
    await redis.aclose()


def opening(task_id: str, submission: str, **changes: Any) -> Open:
    deadline = utcnow() + timedelta(minutes=5)
    envelope = first_handoff(
        task_id=task_id,
        submission=submission,
        workflow="wf",
        step="first",
        agent="agent-a",
        sender="router",
        goal="do it",
        deadline=deadline,
        genesis="0" * 64,
        context={"input": {}, "steps": {}},
        budget=BudgetSnapshot(tokens_used=10, max_steps=5, max_tokens=1000, max_cost_usd=1.0),
    )
    fields: dict[str, Any] = {
        "task_id": task_id,
        "workflow": "wf",
        "submission": submission,
        "genesis": "0" * 64,
        "actor": "service:router",
        "budget": TaskBudget(Caps(tokens=1000, cost_usd=1.0, steps=5), deadline),
        "spent": Amount(tokens=10),
        "first": envelope,
    } | changes
    return Open(**fields)


async def test_open_records_the_task_audits_it_then_hands_the_first_step_on(
    lifecycle: tuple[Lifecycle, CapturingPublisher],
) -> None:
    life, sink = lifecycle
    plan = opening("task-1", "tasks/0/7")
    await life.apply(plan)
    assert sink.kinds() == ["t.audit:task.opened", "t.agent.agent-a"]
    opened_record = sink.published[0][1]
    assert isinstance(opened_record, AuditRecord)
    # The handoff tells the next service where the audit chain stands, so its append needs no read.
    assert sink.headers[1] == {AUDIT_HEAD_HEADER: f"{opened_record.record_hash}:1"}
    assert (await life.store.get("task-1"))["status"] == "running"
    assert (await life.budgets.usage("task-1")).tokens == 10, "the routing call is charged to the fresh budget"

    await life.apply(plan)  # the same submission delivered again: the same envelope again, charged once
    envelopes = [p for t, p in sink.published if isinstance(p, HandoffEnvelope)]
    assert len(envelopes) == 2 and envelopes[0].message_id == envelopes[1].message_id
    assert (await life.budgets.usage("task-1")).tokens == 10
    opened = [p for _, p in sink.published if isinstance(p, AuditRecord)]
    assert len({(r.message_id, r.seq) for r in opened}) == 1, "republished as the same record, not a second one"


async def test_a_second_submission_under_a_taken_id_stops_its_plan_before_anything_is_written(
    lifecycle: tuple[Lifecycle, CapturingPublisher],
) -> None:
    life, sink = lifecycle
    await life.apply(opening("task-2", "tasks/0/1"))
    before = list(sink.published)
    other = End(
        task_id="task-2", workflow="wf", status=TaskStatus.REJECTED, result_id="r-other", actor="service:router"
    )
    await life.apply([opening("task-2", "tasks/0/2"), other])
    assert sink.published == before
    assert (await life.store.get("task-2"))["status"] == "running"


async def test_a_task_ends_once_with_its_one_result_whoever_ends_it(
    lifecycle: tuple[Lifecycle, CapturingPublisher],
) -> None:
    life, sink = lifecycle
    await life.apply(opening("task-3", "tasks/0/3"))
    first = End(task_id="task-3", workflow="wf", status=TaskStatus.FAILED, result_id="r-1", actor="service:x")
    assert await life.end(first) is True
    assert await life.end(first) is False, "published already: a redelivery publishes nothing"
    late = End(task_id="task-3", workflow="wf", status=TaskStatus.COMPLETED, result_id="r-2", actor="service:y")
    assert await life.end(late) is False
    results = [p for _, p in sink.published if isinstance(p, TaskResult)]
    assert [(r.message_id, r.status) for r in results] == [("r-1", TaskStatus.FAILED)]
    assert sink.kinds()[-2:] == ["t.audit:task.failed", "t.results"], "the record comes before the result"


async def test_a_resume_audits_the_decision_carries_it_out_then_publishes_it_as_done(
    lifecycle: tuple[Lifecycle, CapturingPublisher],
) -> None:
    life, sink = lifecycle
    plan = opening("task-4", "tasks/0/4")
    await life.apply(plan)
    assert plan.first is not None
    checkpoint = step_completed(
        plan.first,
        agent="agent-a",
        output={"ok": True},
        context={"input": {}, "steps": {"first": {"ok": True}}},
        patch=[],
        budget=plan.first.budget,
    )
    now = utcnow()
    request = ReviewRequested(
        message_id="req-1",
        review_id="rev-1",
        task_id="task-4",
        workflow="wf",
        step="first",
        step_index=0,
        agent="agent-a",
        reason="a person decides",
        trigger=ReviewTrigger.APPROVAL_GATE,
        role="manager",
        approvals_required=1,
        timeout_s=60,
        default_action="reject",
        context_hash=checkpoint.context_hash,
        checkpoint=checkpoint,
        requested_at=now,
        deadline=now + timedelta(minutes=1),
    )
    decision = ReviewDecided(
        message_id="dec-1",
        review_id="rev-1",
        task_id="task-4",
        workflow="wf",
        action=ReviewAction.APPROVE,
        decision="approved",
        by="reviewer:ana",
        level=0,
        approvals=["reviewer:ana"],
        decided_at=now,
    )
    sink.published.clear()
    then = End.of(checkpoint, TaskStatus.COMPLETED, actor="reviewer:ana", output={"ok": True})
    await life.apply(Resume(decision, request, then))
    assert sink.kinds() == ["t.audit:review.approved", "t.audit:task.completed", "t.results", "t.reviews.decided"]


async def test_a_step_handed_on_goes_to_the_steps_topic(lifecycle: tuple[Lifecycle, CapturingPublisher]) -> None:
    life, sink = lifecycle
    plan = opening("task-5", "tasks/0/5")
    assert plan.first is not None
    step = step_completed(plan.first, agent="agent-a", output={}, context={}, patch=[], budget=plan.first.budget)
    await life.apply(HandOff(step))
    assert sink.kinds() == ["t.steps"] and step.parent_hash == plan.first.context_hash
