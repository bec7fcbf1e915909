"""The review index on real Redis: distinct approvers, the first decision wins, replays change nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from handrail.hashing import context_hash
from handrail.messages import HandoffEnvelope, ReviewRequested, ReviewTrigger, utcnow
from handrail.state import connect_redis, generation
from handrail_review.index import ReviewIndex, Vote, VoteOutcome


@pytest.fixture
async def index(redis_url: str) -> AsyncIterator[ReviewIndex]:
    redis = connect_redis(redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(redis, prefix)  # a namespace of its own, empty on purpose
    yield ReviewIndex(redis, prefix)
    await redis.aclose()


def request(approvals: int = 2, level: int = 0, role: str = "director") -> ReviewRequested:
    context = {"input": {"amount": 1}}
    halted = HandoffEnvelope(
        message_id="h-1",
        task_id="t-1",
        workflow="w",
        step="s",
        step_index=0,
        sender="router",
        receiver="a",
        goal="g",
        context=context,
        context_hash=context_hash(context),
        parent_hash="0" * 64,
        idempotency_key="t-1/s/1",
    )
    now = utcnow()
    return ReviewRequested(
        message_id=f"m-{level}",
        review_id="r-1",
        task_id="t-1",
        workflow="w",
        step="s",
        step_index=0,
        agent="a",
        reason="because",
        trigger=ReviewTrigger.HALT,
        role=role,
        approvals_required=approvals,
        timeout_s=60,
        default_action="reject",
        level=level,
        context_hash=halted.context_hash,
        halted=halted,
        requested_at=now,
        deadline=now + timedelta(seconds=60),
    )


def approve(by: str, level: int = 0, **extra: object) -> Vote:
    return Vote(message_id=f"{level}/{by}/approve", level=level, by=by, action="approve", now_ms=1, **extra)  # type: ignore[arg-type]


async def test_k_distinct_approvers_decide_and_the_same_one_twice_counts_once(index: ReviewIndex) -> None:
    assert await index.upsert(request())
    assert not await index.upsert(request()), "the same request again changes nothing"
    first = await index.vote("r-1", approve("reviewer:dan"))
    assert (first.outcome, first.approvers) == (VoteOutcome.PENDING, ["reviewer:dan"])
    assert (await index.vote("r-1", approve("reviewer:dan"))).outcome == VoteOutcome.DUPLICATE
    same_person_again = Vote(message_id="other-id", level=0, by="reviewer:dan", action="approve", now_ms=2)
    unchanged = await index.vote("r-1", same_person_again)
    assert (unchanged.outcome, unchanged.approvers) == (VoteOutcome.UNCHANGED, ["reviewer:dan"])
    second = await index.vote("r-1", approve("reviewer:dora"))
    assert (second.outcome, second.approvers) == (VoteOutcome.APPROVED, ["reviewer:dan", "reviewer:dora"])
    late = await index.vote("r-1", Vote(message_id="x", level=0, by="reviewer:eve", action="reject", now_ms=3))
    assert (late.outcome, late.status, late.detail) == (VoteOutcome.DECIDED, "approved", "reviewer:dora")
    item = await index.get("r-1")
    assert item is not None and item.approvers == ["reviewer:dan", "reviewer:dora"]
    assert await index.pending() == [] and await index.unfinished() == ["r-1"]
    await index.mark_finished("r-1", "completed")
    assert await index.unfinished() == []


async def test_the_replica_that_carried_a_review_out_keeps_its_outcome_whichever_mark_comes_first(
    index: ReviewIndex,
) -> None:
    elsewhere = "carried out before (its final record is on Kafka)"
    for review_id, marks in (("r-1", ("elsewhere", "here")), ("r-2", ("here", "elsewhere"))):
        await index.upsert(request().model_copy(update={"review_id": review_id}))
        for mark in marks:
            await index.mark_finished(review_id, "completed" if mark == "here" else elsewhere, known=mark == "here")
        item = await index.get(review_id)
        assert item is not None and item.finished, review_id
        assert item.fields.get("outcome") == "completed", (review_id, marks)
    await index.upsert(request().model_copy(update={"review_id": "r-3"}))
    await index.mark_finished("r-3", elsewhere, known=False)
    item = await index.get("r-3")
    assert item is not None and item.finished and item.fields.get("outcome") == elsewhere
    assert await index.unfinished() == []


async def test_an_edit_restarts_the_count_and_an_escalation_makes_older_votes_stale(index: ReviewIndex) -> None:
    await index.upsert(request(approvals=2))
    await index.vote("r-1", approve("reviewer:dan"))
    edited = await index.vote("r-1", approve("reviewer:dora", edit=[{"op": "add", "path": "/x", "value": 1}]))
    assert (edited.outcome, edited.approvers) == (VoteOutcome.PENDING, ["reviewer:dora"]), (
        "dan approved another context"
    )
    assert edited.dropped == ["reviewer:dan"]
    item = await index.get("r-1")
    assert item is not None and item.resets == 1 and item.reset is not None
    assert (item.reset.by, item.reset.dropped) == ("reviewer:dora", ("reviewer:dan",))
    assert await index.upsert(request(approvals=2, level=1, role="ceo"))
    stale = await index.vote("r-1", Vote(message_id="late", level=0, by="reviewer:dan", action="approve", now_ms=4))
    assert (stale.outcome, stale.detail) == (VoteOutcome.STALE, "ceo")
    item = await index.get("r-1")
    assert item is not None and (item.level, item.role, item.approvers) == (1, "ceo", [])


async def test_a_vote_given_again_after_an_edit_dropped_it_counts(index: ReviewIndex) -> None:
    await index.upsert(request(approvals=2))
    await index.vote("r-1", approve("reviewer:dan"))
    await index.vote("r-1", approve("reviewer:dora", edit=[{"op": "add", "path": "/x", "value": 1}]))
    again = await index.vote("r-1", Vote(message_id="0/1/dan", level=0, by="reviewer:dan", action="approve", now_ms=3))
    assert (again.outcome, again.approvers) == (VoteOutcome.APPROVED, ["reviewer:dan", "reviewer:dora"])


async def test_a_replayed_final_record_decides_even_without_the_partial_votes(index: ReviewIndex) -> None:
    await index.upsert(request(approvals=3))
    final = Vote(
        message_id="final",
        level=0,
        by="reviewer:c",
        action="approve",
        now_ms=5,
        final="approved",
        approvers=("reviewer:a", "reviewer:b", "reviewer:c"),
    )
    result = await index.vote("r-1", final)
    assert (result.outcome, result.approvers) == (VoteOutcome.APPROVED, ["reviewer:a", "reviewer:b", "reviewer:c"])
    assert (await index.vote("r-1", final)).outcome == VoteOutcome.DUPLICATE
    assert (await index.vote("nope", final)).outcome == VoteOutcome.UNKNOWN
