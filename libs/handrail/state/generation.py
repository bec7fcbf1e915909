"""The state generation: how a Redis that lost its data is noticed before anything runs on it.

``<p>state:generation`` holds the id of the state Redis was last rebuilt into
(``handrail.recovery``). A Redis restarted empty, or a replica promoted without
it, has no marker. Every script that decides on task state (opening, accepting
and finishing tasks, budgets, audit appends, side-effect claims) is a
``GuardedScript``: it checks the marker in the same atomic step as its own
work and raises ``StateLost`` when it is gone, so no decision is ever taken on
forgotten state. The message is then tried again, once the state is rebuilt.

The marker is one key outside the tasks' hash slots: Handrail runs on one
Redis primary (with replicas or Sentinel), not on Redis Cluster.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from handrail.errors import StateLost
from handrail.state.client import wire_of

#: The error a guarded script returns when the marker is gone; mapped to ``StateLost``.
_LOST = "HANDRAIL_STATE_LOST"
#: The marker comes as the last ARGV (taken off again, so the script's own ARGV are unchanged), not as a
#: key: a script's KEYS must be writable by its caller, and a worker's Redis user may only read the
#: marker (``handrail.state.acl``). Handrail runs on one primary, so an undeclared key is never elsewhere.
_PREAMBLE = f"""
local generation_marker = table.remove(ARGV)
if redis.call('EXISTS', generation_marker) == 0 then return redis.error_reply('{_LOST}') end
"""

#: Rebuilding takes this lock so that one process rebuilds while the others wait.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""

#: Take the lock only while there is no generation: a process that saw the marker gone just before
#: another one committed must not rebuild again (its older snapshot would roll the state back).
_TRY_LOCK = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


def marker_key(prefix: str) -> str:
    """The key holding the current state generation."""
    return f"{prefix}state:generation"


def lock_key(prefix: str) -> str:
    """The key a rebuilding process holds (its token), with an expiry."""
    return f"{prefix}state:rebuilding"


class GuardedScript:
    """A Lua script that runs only on a Redis that still holds its state generation.

    Called like a registered script (``keys=``, ``args=``); the marker key is
    passed after the arguments and taken off before the script's own code runs.
    """

    def __init__(self, redis: aioredis.Redis, source: str, prefix: str) -> None:
        self._source = _PREAMBLE + source
        self._script = redis.register_script(self._source)
        self._wire = wire_of(redis)
        self._marker = marker_key(prefix)

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        try:
            if self._wire is not None:
                return await self._wire.run_script(self._script.sha, self._source, keys, [*args, self._marker])
            return await self._script(keys=keys, args=[*args, self._marker])
        except ResponseError as exc:
            if _LOST in str(exc):
                raise StateLost(
                    f"Redis has no state generation ({self._marker} is gone): it restarted empty or lost "
                    "writes; waiting for the state to be rebuilt from Kafka"
                ) from None
            raise


async def current(redis: aioredis.Redis, prefix: str) -> str | None:
    """The current generation, or None when Redis has lost (or never had) its state."""
    found = await redis.get(marker_key(prefix))
    return None if found is None else str(found)


async def try_lock(redis: aioredis.Redis, prefix: str, ttl_s: float) -> str | None:
    """Take the rebuild lock for ``ttl_s``; its token, or None when another process holds it or the state
    has a generation again (rebuilt meanwhile)."""
    token = uuid.uuid4().hex
    taken = await redis.eval(_TRY_LOCK, 2, lock_key(prefix), marker_key(prefix), token, int(ttl_s * 1000))
    return token if taken else None


async def extend_lock(redis: aioredis.Redis, prefix: str, token: str, ttl_s: float) -> bool:
    """Keep holding the lock; False when it was lost (expired, or Redis was wiped again)."""
    if await redis.get(lock_key(prefix)) != token:
        return False
    return bool(await redis.pexpire(lock_key(prefix), int(ttl_s * 1000)))


async def release(redis: aioredis.Redis, prefix: str, token: str) -> None:
    """Give the lock up after a failed rebuild, so another process need not wait for it to expire."""
    await redis.eval(_RELEASE, 1, lock_key(prefix), token)


async def commit(redis: aioredis.Redis, prefix: str, token: str) -> str | None:
    """Set a new generation if ``token`` still holds the lock; the generation, or None.

    A Redis wiped again during the rebuild has lost the lock too: the rebuild
    then does not count and starts over.
    """
    generation = uuid.uuid4().hex
    done = await redis.eval(_COMMIT, 2, lock_key(prefix), marker_key(prefix), token, generation)
    return generation if done else None


async def stamp(redis: aioredis.Redis, prefix: str) -> str:
    """Mark Redis as holding complete state without rebuilding: for a store that starts empty on purpose
    (a test's own Redis prefix, a benchmark). Services never call this; they rebuild."""
    generation = uuid.uuid4().hex
    await redis.set(marker_key(prefix), generation)
    return generation
