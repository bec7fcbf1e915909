"""Canaries on real Redis: routing by task, each end and review counted once, the rule's verdict,
a canary that no longer holds once another version is activated, and ending only the one judged."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handrail.contracts import CanaryRule
from handrail.messages import TaskResult, TaskStatus
from handrail.prompts import PromptLibrary, PromptStore
from handrail.prompts.canary import Arm, Canary, Cohort, judge
from handrail.state import connect_redis
from handrail.state.canaries import PENDING_TTL_S, CanaryCohorts

pytestmark = pytest.mark.bus

AGENT = "expense-approver"


def result(task_id: str, status: TaskStatus, cost: float = 0.01) -> TaskResult:
    return TaskResult(
        message_id=uuid.uuid4().hex, task_id=task_id, workflow="expense-approval", status=status,
        steps=1, tokens=10, cost_usd=cost, finished_at=datetime.now(UTC),
    )  # fmt: skip


@pytest.fixture
async def prompts(redis_url: str, tmp_path: Path) -> AsyncIterator[PromptStore]:
    for version in ("1", "2", "3"):
        folder = tmp_path / "approver"
        folder.mkdir(exist_ok=True)
        (folder / f"{version}.md").write_text(f"You approve expenses, version {version}.\n")
    redis = connect_redis(redis_url)
    yield PromptStore(PromptLibrary(tmp_path), redis, f"t{uuid.uuid4().hex[:8]}:")
    await redis.aclose()


def test_a_task_is_in_the_cohort_or_not_for_good_and_the_share_is_about_the_percent() -> None:
    canary = Canary.start(AGENT, "approver", "2", "1", 20, "test")
    tasks = [uuid.uuid4().hex for _ in range(5000)]
    chosen = [t for t in tasks if canary.in_cohort(t)]
    assert all(canary.in_cohort(t) for t in chosen), "the same answer every time"
    assert 850 < len(chosen) < 1150, len(chosen)
    everyone = Canary.start(AGENT, "approver", "2", "1", 100, "test")
    assert all(everyone.in_cohort(t) for t in tasks[:50])
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError, match="more than 0 and at most 100"):
            Canary.start(AGENT, "approver", "2", "1", bad, "test")
    with pytest.raises(ValueError, match="live version already"):
        Canary.start(AGENT, "approver", "1", "1", 10, "test")


def test_the_rule_judges_only_with_enough_tasks_and_names_what_is_worse() -> None:
    rule = CanaryRule(min_tasks=10)
    live = Cohort(tasks=40, failed=2, rejected=0, reviewed=4, cost_usd=0.4)
    assert judge(Cohort(tasks=9, failed=9), live, rule) is None, "too few tasks: no verdict"
    assert judge(Cohort(tasks=10, failed=1, reviewed=1, cost_usd=0.1), live, rule) == []
    worse = judge(Cohort(tasks=10, failed=2, rejected=1, reviewed=1, cost_usd=0.2), live, rule)
    assert worse is not None and [w.measure for w in worse] == ["failure_rate", "rejection_rate", "mean_cost_usd"]
    assert worse[0].describe() == "failure rate 20.0% against live's 5.0% (allowed: 5.0 points more)"


async def test_workers_resolve_the_candidate_for_its_cohort_until_the_canary_ends(prompts: PromptStore) -> None:
    canary = Canary.start(AGENT, "approver", "2", "1", 50, "test")
    assert await prompts.start_canary(canary) is None
    inside = next(t for t in (uuid.uuid4().hex for _ in range(100)) if canary.in_cohort(t))
    outside = next(t for t in (uuid.uuid4().hex for _ in range(100)) if not canary.in_cohort(t))
    ref = "approver@1"
    assert (await prompts.resolve(ref, agent=AGENT, task_id=inside)).ref == "approver@2"
    assert (await prompts.resolve(ref, agent=AGENT, task_id=outside)).ref == "approver@1"
    assert (await prompts.resolve(ref, agent="another", task_id=inside)).ref == "approver@1", "one agent's canary"
    assert await prompts.canaries({AGENT: ref, "another": ref}) == {AGENT: canary}

    # Another version activated: the canary compared with the old live one no longer holds.
    await prompts.activate("approver", "3", declared="1")
    assert (await prompts.resolve(ref, agent=AGENT, task_id=inside)).ref == "approver@3"
    assert await prompts.canary("approver", AGENT, declared="1") is None

    again = Canary.start(AGENT, "approver", "2", "3", 100, "test")
    assert await prompts.start_canary(again) == canary, "starting one again replaces it"
    assert not await prompts.end_canary(canary, "canary.rolled_back", by="test"), "only the canary judged ends"
    assert await prompts.end_canary(again, "canary.rolled_back", by="test", reason="worse")
    assert (await prompts.resolve(ref, agent=AGENT, task_id=inside)).ref == "approver@3"
    assert (await prompts.changes("approver", 1))[0] | {"at": "-"} == {
        "action": "canary.rolled_back", "version": "2", "by": "test", "agent": AGENT, "reason": "worse", "at": "-",
    }  # fmt: skip


async def test_each_end_and_each_review_counts_once_for_the_version_the_task_ran(prompts: PromptStore) -> None:
    canary = Canary.start(AGENT, "approver", "2", "1", 50, "test")
    cohorts = CanaryCohorts(prompts.redis, prompts._prefix)
    await cohorts.mark(canary, "a", Arm.LIVE, 60)
    await cohorts.mark(canary, "b", Arm.LIVE, 60)
    await cohorts.mark(canary, "b", Arm.CANDIDATE, 60)  # once a call ran the candidate, the task is its
    await cohorts.mark(canary, "b", Arm.LIVE, 60)
    assert await cohorts.count_result(canary, result("a", TaskStatus.COMPLETED), 60) == Arm.LIVE
    assert await cohorts.count_result(canary, result("a", TaskStatus.COMPLETED), 60) is None, "read again: once"
    assert await cohorts.count_review(canary, "b", "r1", 60) == Arm.CANDIDATE
    assert await cohorts.count_review(canary, "b", "r1", 60) is None
    assert await cohorts.count_result(canary, result("b", TaskStatus.FAILED, 0.05), 60) == Arm.CANDIDATE
    assert await cohorts.count_result(canary, result("c", TaskStatus.FAILED), 60) is None, "not the canary's task"
    figures = await cohorts.figures(canary, 60)
    assert figures[Arm.LIVE] == Cohort(tasks=1, cost_usd=0.01)
    assert figures[Arm.CANDIDATE] == Cohort(tasks=1, failed=1, reviewed=1, cost_usd=0.05)
    later = await cohorts.figures(canary, 60, now=datetime.now(UTC).timestamp() + 120)
    assert later[Arm.CANDIDATE].tasks == 0, "out of the window"


async def test_an_end_or_a_review_read_before_the_tasks_events_is_counted_when_they_mark_it(
    prompts: PromptStore,
) -> None:
    # The circuit-breaker reads the results, reviews and events topics apart: the end can come first.
    canary = Canary.start(AGENT, "approver", "2", "1", 50, "test")
    cohorts = CanaryCohorts(prompts.redis, prompts._prefix)
    assert await cohorts.count_result(canary, result("late", TaskStatus.FAILED, 0.02), 60) is None
    assert await cohorts.count_result(canary, result("late", TaskStatus.FAILED, 0.02), 60) is None, "read again"
    assert await cohorts.count_review(canary, "late", "r7", 60) is None
    assert (await cohorts.figures(canary, 60))[Arm.CANDIDATE] == Cohort(), "not counted before it has an arm"
    assert await cohorts.mark(canary, "late", Arm.CANDIDATE, 60) == Arm.CANDIDATE
    assert await cohorts.mark(canary, "late", Arm.CANDIDATE, 60) is None, "counted once"
    assert await cohorts.count_result(canary, result("late", TaskStatus.FAILED, 0.02), 60) is None
    assert (await cohorts.figures(canary, 60))[Arm.CANDIDATE] == Cohort(tasks=1, failed=1, reviewed=1, cost_usd=0.02)
    assert await cohorts.mark(canary, "early", Arm.LIVE, 60) is None, "nothing waited for this one"
    assert await cohorts.count_result(canary, result("never", TaskStatus.COMPLETED), 60) is None
    waiting = await prompts.redis.ttl(f"{prompts._prefix}canary:{canary.id}:task:never")
    assert 0 < waiting <= PENDING_TTL_S, "a task its events never mark is forgotten within the hour"
