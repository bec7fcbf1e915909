"""The circuit-breaker's batches on real Redis: concurrent events share a round trip and count as alone."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis

from handrail.errors import RetryableError
from handrail.state.controls import BreakerPolicy, BreakerState, ControlStore
from handrail_circuit_breaker.batching import OutcomeBatcher

pytestmark = pytest.mark.bus  # real Redis

POLICY = BreakerPolicy(failure_ratio=0.5, min_calls=4, window_s=60, cooldown_s=60)


async def test_concurrent_outcomes_go_in_one_batch_and_each_caller_gets_its_own_changes(
    state_redis: aioredis.Redis,
) -> None:
    controls = ControlStore(state_redis, f"t{uuid.uuid4().hex[:8]}:")
    batcher = OutcomeBatcher(controls, POLICY, linger_s=0.05)
    now = int(time.time() * 1000)
    # Four failures of one tool among healthy calls of others: the fourth opens its breaker.
    calls = [[("agent", "a", True, now), ("tool", f"ok-{n}", True, now)] for n in range(20)]
    calls += [[("agent", "b", True, now), ("tool", "broken", False, now)] for _ in range(4)]
    answers = await asyncio.gather(*(batcher.record(c) for c in calls))
    assert batcher.largest_batch == 48, "every handler of the moment shares one round trip"
    changes = [change for answer in answers for change in answer if change is not None]
    assert changes == [BreakerState.OPEN]
    assert answers[-1] == [None, BreakerState.OPEN], "the change goes back to the call that caused it"
    assert await controls.breaker_state("tool", "broken") == BreakerState.OPEN
    assert await controls.breaker_state("agent", "a") == BreakerState.CLOSED


async def test_a_batch_redis_refuses_fails_every_caller_so_each_is_retried() -> None:
    unreachable = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    batcher = OutcomeBatcher(ControlStore(unreachable, "t:"), POLICY)
    now = int(time.time() * 1000)
    results = await asyncio.gather(
        *(batcher.record([("tool", "x", True, now)]) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RetryableError) for r in results), results
    await unreachable.aclose()
