"""Error-rate breakers on real Redis: a batch of outcomes counts exactly as the outcomes one by one."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from handrail.state.controls import BreakerPolicy, BreakerState, ControlStore

pytestmark = pytest.mark.bus

POLICY = BreakerPolicy(failure_ratio=0.5, min_calls=4, window_s=10, cooldown_s=5)
OPEN, CLOSED = BreakerState.OPEN, BreakerState.CLOSED


@dataclass
class Reference:
    """The breaker as the README describes it, written plainly: what Redis must agree with."""

    state: str = "closed"
    opened: int = 0
    start: int = 0
    calls: int = 0
    failures: int = 0

    def count(self, ok: bool, now: int, policy: BreakerPolicy) -> str | None:
        if self.state == "open":
            if now - self.opened < policy.cooldown_s * 1000:
                return None  # ignored while open
            self.state = "half_open"
        if self.state == "half_open":  # the trial call decides
            if ok:
                self.state, self.calls, self.failures, self.start = "closed", 0, 0, now
            else:
                self.state, self.opened = "open", now
            return self.state
        if now - self.start > policy.window_s * 1000:
            self.calls, self.failures, self.start = 0, 0, now
        self.calls += 1
        self.failures += not ok
        if self.calls >= policy.min_calls and self.failures / self.calls >= policy.failure_ratio:
            self.state, self.opened = "open", now
            return "open"
        return None


def outcomes(seed: int, n: int = 200) -> list[tuple[bool, int]]:
    """Outcomes over time: bursts of failures, pauses longer than the cool-down and than the window."""
    rng, now, found = random.Random(seed), 1_000_000, []
    for _ in range(n):
        now += rng.choice([1, 10, 100, 1000, 6000, 12000])
        found.append((rng.random() < 0.6, now))
    return found


@pytest.fixture
def controls(state_redis: aioredis.Redis) -> ControlStore:
    return ControlStore(state_redis, f"t{uuid.uuid4().hex[:8]}:")


@pytest.mark.parametrize("seed", range(5))
async def test_a_batch_changes_the_breaker_as_each_outcome_alone_would(controls: ControlStore, seed: int) -> None:
    sequence = outcomes(seed)
    reference = Reference()
    expected = [reference.count(ok, now, POLICY) for ok, now in sequence]
    assert {"open", "closed"} <= set(expected), "the sequence opens and closes the breaker"

    one_by_one = [await controls.record_outcome("tool", "alone", ok, POLICY, now) for ok, now in sequence]
    batched = await controls.record_outcomes([("tool", "batched", ok, now) for ok, now in sequence], POLICY)

    assert [c and c.value for c in one_by_one] == expected
    assert [c and c.value for c in batched] == expected
    assert await controls.breaker_state("tool", "batched") == BreakerState(reference.state)


async def test_outcomes_of_several_breakers_in_one_batch_each_go_to_their_own(controls: ControlStore) -> None:
    now = 5_000_000
    batch = [
        (scope, name, ok, now + i)
        for i in range(4)
        for scope, name, ok in [("tool", "broken", False), ("agent", "fine", True)]
    ]
    changed = await controls.record_outcomes(batch, POLICY)
    assert changed == [None] * 6 + [OPEN, None], "the fourth failure opens the tool's breaker, in its place"
    assert await controls.breaker_state("tool", "broken") == OPEN
    assert await controls.breaker_state("agent", "fine") == CLOSED
