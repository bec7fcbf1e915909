"""The keeper: of many processes that find the state gone, one rebuilds and the rest wait for it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from handrail.recovery import RebuildReport, StateKeeper
from handrail.state import generation


class CountingRebuilder:
    """Stands in for the Kafka read: takes a while, then commits under the lock as the real one does."""

    lock_ttl_s = 30.0

    def __init__(self, redis: aioredis.Redis, prefix: str, fail_first: bool = False) -> None:
        self.redis, self.prefix, self.fail_first = redis, prefix, fail_first
        self.runs = 0

    async def rebuild(self, token: str) -> RebuildReport:
        self.runs += 1
        await asyncio.sleep(0.3)
        if self.fail_first and self.runs == 1:
            raise RuntimeError("Kafka went away mid-read")
        committed = await generation.commit(self.redis, self.prefix, token)
        assert committed is not None
        return RebuildReport(committed, 0, 0, 0, 0.3)


async def test_one_of_many_keepers_rebuilds_and_all_see_the_same_generation(state_redis: aioredis.Redis) -> None:
    redis = state_redis
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    rebuilders = [CountingRebuilder(redis, prefix) for _ in range(5)]
    keepers = [StateKeeper(redis, prefix, r) for r in rebuilders]  # type: ignore[arg-type]
    await asyncio.gather(*(k.ensure() for k in keepers))
    assert sum(r.runs for r in rebuilders) == 1
    assert {k.generation for k in keepers} == {await generation.current(redis, prefix)}


async def test_a_failed_rebuild_gives_the_lock_up_and_the_next_try_succeeds(state_redis: aioredis.Redis) -> None:
    redis = state_redis
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    rebuilder = CountingRebuilder(redis, prefix, fail_first=True)
    keeper = StateKeeper(redis, prefix, rebuilder)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        await keeper.ensure()
    assert await redis.get(generation.lock_key(prefix)) is None, "the lock is released, not left to expire"
    await keeper.ensure()
    assert rebuilder.runs == 2 and await generation.current(redis, prefix) == keeper.generation
