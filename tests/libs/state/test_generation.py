"""The state generation marker: guarded scripts refuse a Redis that lost it; a rebuild commits only under its lock."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from handrail.errors import StateLost
from handrail.state import TaskStore, generation


async def test_a_guarded_script_refuses_to_run_without_the_marker(state_redis: aioredis.Redis) -> None:
    redis = state_redis
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = TaskStore(redis, prefix)
    with pytest.raises(StateLost, match="state generation"):
        await store.open("t1", "wf", "sub-1", "0" * 64, "now")
    assert await store.get("t1") == {}, "nothing was written on the forgotten state"

    await generation.stamp(redis, prefix)
    assert (await store.open("t1", "wf", "sub-1", "0" * 64, "now")).value == "opened"
    await redis.delete(generation.marker_key(prefix))  # as a restart without persistence would
    with pytest.raises(StateLost):
        await store.finish("t1", "wf", "completed", "r1", "now")


async def test_a_rebuild_commits_only_while_it_holds_the_lock(state_redis: aioredis.Redis) -> None:
    redis = state_redis
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    token = await generation.try_lock(redis, prefix, ttl_s=30)
    assert token is not None
    assert await generation.try_lock(redis, prefix, ttl_s=30) is None, "a second rebuilder must wait"
    await redis.delete(generation.lock_key(prefix))  # Redis wiped again during the rebuild
    assert await generation.commit(redis, prefix, token) is None
    assert await generation.current(redis, prefix) is None

    token = await generation.try_lock(redis, prefix, ttl_s=30)
    assert token is not None and await generation.extend_lock(redis, prefix, token, ttl_s=30)
    committed = await generation.commit(redis, prefix, token)
    assert committed is not None and await generation.current(redis, prefix) == committed
    assert await redis.get(generation.lock_key(prefix)) is None


async def test_no_lock_is_given_while_a_generation_is_there(state_redis: aioredis.Redis) -> None:
    """A process that saw the marker gone just before another committed must not rebuild a second time."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    token = await generation.try_lock(state_redis, prefix, 30)
    assert token is not None, "no generation, no lock held: the lock is given"
    assert await generation.commit(state_redis, prefix, token) is not None
    assert await generation.try_lock(state_redis, prefix, 30) is None, "rebuilt meanwhile: nothing to rebuild"
