"""Budgets on real Redis: atomic reserve-and-settle, caps that concurrency cannot break."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from handrail.state import connect_redis, generation
from handrail.state.budgets import Amount, BudgetStore, Caps, Grant, UnknownBudget, Verdict

pytestmark = pytest.mark.bus

UNLIMITED = Caps(tokens=10**12, cost_usd=10**6, steps=10**6)


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[BudgetStore]:
    client, prefix = connect_redis(redis_url), f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(client, prefix)  # a namespace of its own, empty on purpose
    yield BudgetStore(client, prefix=prefix)
    await client.aclose()


async def open_task(store: BudgetStore, caps: Caps, deadline_in_s: float = 60) -> str:
    task_id = f"budget-{uuid.uuid4().hex[:8]}"
    assert await store.open(task_id, caps, now_ms() + int(deadline_in_s * 1000))
    return task_id


async def test_hundreds_of_concurrent_reservations_never_pass_the_cap(store: BudgetStore) -> None:
    task_id = await open_task(store, Caps(tokens=10_000, cost_usd=1.0, steps=1000))
    # 400 workers each want 70 tokens: at most 142 of them fit under 10 000.
    results = await asyncio.gather(
        *(store.reserve(task_id, f"r{i}", f"agent-{i % 7}", Amount(tokens=70), UNLIMITED, now_ms()) for i in range(400))
    )
    granted = [r for r in results if r.ok]
    assert len(granted) == 10_000 // 70
    assert {r.dimension for r in results if not r.ok} == {"tokens"}
    # Settle concurrently too, each with less than it reserved; the total stays under the cap.
    await asyncio.gather(*(store.settle(task_id, f"r{i}", Amount(tokens=60)) for i in range(400)))
    usage = await store.usage(task_id)
    assert usage.tokens == 60 * len(granted) <= 10_000


async def test_cost_is_counted_exactly_under_concurrency(store: BudgetStore) -> None:
    task_id = await open_task(store, Caps(tokens=10**9, cost_usd=0.05, steps=1000))
    results = await asyncio.gather(
        *(store.reserve(task_id, f"c{i}", "a", Amount(cost_usd=0.0003), UNLIMITED, now_ms()) for i in range(300))
    )
    assert sum(r.ok for r in results) == 166  # floor(0.05 / 0.0003)
    await asyncio.gather(*(store.settle(task_id, f"c{i}", Amount(cost_usd=0.0003)) for i in range(300)))
    assert (await store.usage(task_id)).cost_usd == pytest.approx(166 * 0.0003)


async def test_the_call_that_would_overspend_is_refused_before_it_runs(store: BudgetStore) -> None:
    task_id = await open_task(store, Caps(tokens=100, cost_usd=1, steps=10))
    first = await store.reserve(task_id, "a", "agent", Amount(tokens=60), UNLIMITED, now_ms())
    assert first.ok
    second = await store.reserve(task_id, "b", "agent", Amount(tokens=60), UNLIMITED, now_ms())
    assert second.verdict == Verdict.EXHAUSTED and (second.scope, second.dimension) == ("task", "tokens")
    assert "task budget for tokens exhausted: 60 used or reserved of 100" in second.describe()
    await store.settle(task_id, "a", Amount(tokens=30))
    assert (await store.reserve(task_id, "b", "agent", Amount(tokens=60), UNLIMITED, now_ms())).ok


async def test_agent_caps_apply_within_the_task(store: BudgetStore) -> None:
    task_id = await open_task(store, Caps(tokens=1000, cost_usd=1, steps=10))
    agent_caps = Caps(tokens=1000, cost_usd=1, steps=2)
    for i in range(2):
        assert (await store.reserve(task_id, f"s{i}", "intake", Amount(steps=1), agent_caps, now_ms())).ok
    third = await store.reserve(task_id, "s2", "intake", Amount(steps=1), agent_caps, now_ms())
    assert (third.verdict, third.scope, third.dimension) == (Verdict.EXHAUSTED, "agent", "steps")
    assert (await store.reserve(task_id, "s3", "approver", Amount(steps=1), agent_caps, now_ms())).ok


async def test_reserve_and_settle_are_idempotent_per_reservation_id(store: BudgetStore) -> None:
    task_id = await open_task(store, Caps(tokens=100, cost_usd=1, steps=10))
    for _ in range(3):  # a redelivered step re-reserves under the same id
        assert (await store.reserve(task_id, "same", "agent", Amount(tokens=80), UNLIMITED, now_ms())).ok
    for _ in range(3):
        await store.settle(task_id, "same", Amount(tokens=80))
    assert (await store.usage(task_id)).tokens == 80


async def test_deadline_and_unknown_task(store: BudgetStore) -> None:
    task_id = await open_task(store, Caps(tokens=100, cost_usd=1, steps=10), deadline_in_s=-1)
    late = await store.reserve(task_id, "x", "agent", Amount(tokens=1), UNLIMITED, now_ms())
    assert late.verdict == Verdict.DEADLINE and late.describe() == "the task's deadline has passed"
    unknown = await store.reserve("never-opened", "x", "agent", Amount(tokens=1), UNLIMITED, now_ms())
    assert unknown.verdict == Verdict.UNKNOWN_TASK
    assert not await store.open(task_id, Caps(1, 1, 1), now_ms())  # opening twice keeps the first


async def test_a_grant_raises_the_caps_and_the_deadline_once(store: BudgetStore) -> None:
    """A person's top-up: more for the task and for the halted agent within it, a later deadline; applied once."""
    task_id = await open_task(store, Caps(tokens=100, cost_usd=1, steps=2), deadline_in_s=-1)
    agent_caps = Caps(tokens=100, cost_usd=1, steps=2)
    late = await store.reserve(task_id, "r0", "intake", Amount(tokens=10), agent_caps, now_ms())
    assert late.verdict == Verdict.DEADLINE
    grant = Grant(
        task_id, "review-1/grant", "intake", Amount(tokens=50, cost_usd=0.5), wall_ms=30_000, extend_ms=60_000
    )
    assert await store.grant(grant)
    assert not await store.grant(grant), "carrying the decision out again grants nothing more"
    assert (await store.reserve(task_id, "r1", "intake", Amount(tokens=140), agent_caps, now_ms())).ok
    over = await store.reserve(task_id, "r2", "intake", Amount(tokens=20), agent_caps, now_ms())
    assert (over.verdict, over.scope, over.cap) == (Verdict.EXHAUSTED, "task", "150")
    granted = await store.granted(task_id)
    assert granted.extra == Amount(tokens=50, cost_usd=0.5) and granted.wall_ms == 30_000


async def test_a_grant_to_a_task_without_a_budget_is_retryable(store: BudgetStore) -> None:
    with pytest.raises(UnknownBudget):
        await store.grant(Grant("never-opened", "g", "", Amount(tokens=1)))


async def test_a_restored_budget_keeps_its_grants_and_never_takes_one_twice(store: BudgetStore) -> None:
    """What ``handrail.recovery`` writes back after Redis lost it: the opening's caps plus each grant, once."""
    task_id, deadline_ms = f"budget-{uuid.uuid4().hex[:8]}", now_ms() - 1000
    grant = Grant(task_id, "review-1/grant", "intake", Amount(tokens=50), wall_ms=0, extend_ms=60_000)
    pipe = store._redis.pipeline(transaction=False)
    store.restore(
        pipe, task_id, Caps(100, 1, 5), deadline_ms, Amount(tokens=100), {"intake": Amount(tokens=100)}, [grant]
    )
    await pipe.execute()
    assert not await store.grant(grant), "the marker came back with the grant"
    agent_caps = Caps(tokens=100, cost_usd=1, steps=5)
    assert (await store.reserve(task_id, "r1", "intake", Amount(tokens=50), agent_caps, now_ms())).ok
    assert not (await store.reserve(task_id, "r2", "intake", Amount(tokens=1), agent_caps, now_ms())).ok
