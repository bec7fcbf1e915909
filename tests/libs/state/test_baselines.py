"""Behavioural baselines on real Redis: figures count each batch once, completed tasks fold once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from handrail.baselines import Figures, Measure, judge
from handrail.contracts import Baseline as Policy
from handrail.state import connect_redis
from handrail.state.baselines import BaselineStore, Observation

pytestmark = pytest.mark.bus

AGENT = "expense-intake"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[BaselineStore]:
    redis = connect_redis(redis_url)
    yield BaselineStore(redis, f"t{uuid.uuid4().hex[:8]}:")
    await redis.aclose()


async def run_task(store: BaselineStore, task_id: str, *, cost: float, tools: int, errors: int = 0) -> None:
    """A one-step task of AGENT: one model call, ``tools`` tool calls of which ``errors`` failed."""
    await store.observe(task_id, AGENT, f"{task_id}/b1", Figures(cost_usd=cost, calls=1), "extract")
    delta = Figures(tool_calls=tools, calls=tools, errors=errors)
    await store.observe(task_id, AGENT, f"{task_id}/b2", delta, "extract")


async def test_a_batch_read_again_counts_once_and_each_step_once(store: BaselineStore) -> None:
    await store.observe("t1", AGENT, "b1", Figures(cost_usd=0.25, tool_calls=1, calls=2), "extract")
    again = await store.observe("t1", AGENT, "b1", Figures(cost_usd=0.25, tool_calls=1, calls=2), "extract")
    assert again.figures == Figures(cost_usd=0.25, steps=1, tool_calls=1, calls=2)
    later = await store.observe("t1", AGENT, "b2", Figures(calls=1, errors=1), "extract")
    assert later.figures == Figures(cost_usd=0.25, steps=1, tool_calls=1, calls=3, errors=1), "same step"
    other = await store.observe("t1", AGENT, "b3", Figures(calls=1), "check")
    assert other.figures.steps == 2
    assert other.baseline.tasks == 0 and not other.flagged
    await store.flag("t1", AGENT, Measure.ERROR_RATE)
    assert (await store.observe("t1", AGENT, "b3", Figures(), "check")).flagged == {Measure.ERROR_RATE}


async def test_batches_counted_together_count_in_order_and_a_repeat_among_them_once(store: BaselineStore) -> None:
    first = Observation("t2", AGENT, "b1", Figures(cost_usd=0.25, calls=1), "extract")
    later = Observation("t2", AGENT, "b2", Figures(tool_calls=2, calls=2, errors=1), "extract")
    elsewhere = Observation("t3", AGENT, "b1", Figures(calls=1), "extract")
    observed = await store.observe_all([first, later, first, elsewhere])
    assert [o.figures.calls for o in observed] == [1, 3, 3, 1], "each sees the figures as they were after it"
    assert observed[2].figures == Figures(cost_usd=0.25, steps=1, tool_calls=2, calls=3, errors=1)
    assert await store.observe_all([]) == []


async def test_completed_tasks_fold_into_a_mean_once_each(store: BaselineStore) -> None:
    for i, cost in enumerate([1.0, 2.0, 3.0]):
        await run_task(store, f"t{i}", cost=cost, tools=2)
        assert await store.agents_of(f"t{i}") == [AGENT]
        assert await store.fold(f"t{i}", {AGENT: 50})
        assert not await store.fold(f"t{i}", {AGENT: 50}), "a result read again teaches nothing more"
    baseline = await store.baseline(AGENT)
    assert baseline.tasks == 3
    assert baseline.mean(Measure.COST_USD) == pytest.approx(2.0), "the plain mean within the window"
    assert baseline.mean(Measure.TOOL_CALLS_PER_STEP) == pytest.approx(2.0)
    assert baseline.mean(Measure.STEPS) == pytest.approx(1.0)
    assert baseline.mean(Measure.ERROR_RATE) == pytest.approx(0.0)


async def test_past_the_window_recent_tasks_weigh_more(store: BaselineStore) -> None:
    for i in range(10):
        await run_task(store, f"t{i}", cost=1.0, tools=1)
        await store.fold(f"t{i}", {AGENT: 3})
    await run_task(store, "t-new", cost=3.0, tools=1)
    await store.fold("t-new", {AGENT: 3})
    # Window 3: the new task weighs 2/(3+1) = 0.5, not the plain mean's 1/11.
    assert (await store.baseline(AGENT)).mean(Measure.COST_USD) == pytest.approx(2.0)


async def test_a_task_that_did_not_complete_is_forgotten_not_learnt(store: BaselineStore) -> None:
    await run_task(store, "t1", cost=5.0, tools=9, errors=9)
    await store.forget("t1")
    assert not await store.fold("t1", {AGENT: 50})
    assert (await store.baseline(AGENT)).tasks == 0


async def test_a_running_task_is_judged_against_what_was_learnt(store: BaselineStore) -> None:
    policy = Policy(warmup_tasks=3, max_ratio=3.0, max_error_rate_increase=0.5, min_calls=3)
    for i in range(3):
        await run_task(store, f"t{i}", cost=0.1, tools=2)
        await store.fold(f"t{i}", {AGENT: policy.tasks})
    await store.observe("odd", AGENT, "b1", Figures(cost_usd=0.5, calls=1), "extract")
    observed = await store.observe("odd", AGENT, "b2", Figures(tool_calls=7, calls=7, errors=6), "extract")
    found = {d.measure: d for d in judge(observed.figures, observed.baseline, policy)}
    assert set(found) == {Measure.COST_USD, Measure.TOOL_CALLS_PER_STEP, Measure.ERROR_RATE}
    assert found[Measure.COST_USD].mean == pytest.approx(0.1) and found[Measure.COST_USD].tasks == 3
    assert found[Measure.ERROR_RATE].value == pytest.approx(6 / 8)
