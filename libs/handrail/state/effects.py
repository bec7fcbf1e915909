"""At-most-once side effects: one record per idempotency key (task, step, tool, canonical args).

A side-effecting tool runs only after it claims its key; its result is stored
under the key, so a redelivered step gets the recorded result instead of
acting again. A claim without a result means an earlier attempt died while
the tool ran: whether the effect happened is unknown, so it is not repeated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from handrail.state.client import unavailable_as_retryable
from handrail.state.generation import GuardedScript

#: Keep records as long as a task can be redelivered.
EFFECT_TTL_S = 7 * 24 * 3600

_CLAIM = """
local result = redis.call('HGET', KEYS[1], 'result')
if result then return {'recorded', result} end
if redis.call('HSETNX', KEYS[1], 'claimed_by', ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'run', ''}
end
return {'in_doubt', redis.call('HGET', KEYS[1], 'claimed_by')}
"""


class Claim(StrEnum):
    """What a side-effecting call may do."""

    RUN = "run"  # first time: run it, then record the result
    RECORDED = "recorded"  # it ran before: use the recorded result
    IN_DOUBT = "in_doubt"  # an earlier attempt died while it ran: do not run it again


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    result: dict[str, Any] | None = None


class EffectStore:
    """Idempotency records of side-effecting tool calls."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._claim = GuardedScript(redis, _CLAIM, prefix)

    def _key(self, task_id: str, idempotency_key: str) -> str:
        return f"{self._prefix}{{{task_id}}}:effect:{idempotency_key}"

    async def claim(self, task_id: str, idempotency_key: str, claimant: str) -> ClaimResult:
        """Claim the key for ``claimant``, or return what an earlier claim left."""
        async with unavailable_as_retryable(f"claim side effect {idempotency_key} of task {task_id}"):
            outcome, detail = await self._claim(
                keys=[self._key(task_id, idempotency_key)], args=[claimant, EFFECT_TTL_S]
            )
        if outcome == Claim.RECORDED:
            return ClaimResult(Claim.RECORDED, json.loads(detail))
        return ClaimResult(Claim(outcome))

    async def record(self, task_id: str, idempotency_key: str, result: dict[str, Any]) -> None:
        """Store the result of a call that ran."""
        async with unavailable_as_retryable(f"record side effect {idempotency_key} of task {task_id}"):
            await self._redis.hset(self._key(task_id, idempotency_key), "result", json.dumps(result))

    async def release(self, task_id: str, idempotency_key: str) -> None:
        """Drop a claim whose call failed without effect, so a later attempt may run it."""
        async with unavailable_as_retryable(f"release side effect {idempotency_key} of task {task_id}"):
            await self._redis.delete(self._key(task_id, idempotency_key))
