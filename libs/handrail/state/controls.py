"""Halts, loop windows and circuit breakers in Redis: what a worker checks before every call.

- ``<p>halt:task:<id>`` / ``<p>halt:agent:<name>``: set by an operator (``handrail halt``) or a trip.
- ``<p>{id}:loop:<tool>:<args_hash>``: when each identical call was made (a sorted set per task).
- ``<p>breaker:<scope>:<name>``: an error-rate breaker (closed -> open -> half_open -> closed)
  for an agent, a tool or a model, written by the circuit-breaker service.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from handrail.state.client import unavailable_as_retryable

#: Lua functions shared by the scripts here and by ``handrail.state.admission`` (one home for each check).
#: ``loop_count``: record one identical call in the window; its count, negative when it is one too many.
LOOP_FN = """
local function loop_count(key, call_id, now, window, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZSCORE', key, call_id) then return redis.call('ZCARD', key) end
  local count = redis.call('ZCARD', key)
  if count + 1 > limit then return -(count + 1) end
  redis.call('ZADD', key, now, call_id)
  redis.call('PEXPIRE', key, window)
  return count + 1
end
"""

#: ``breaker_allow``: the breaker's state for a call now; an open one past its cool-down turns half-open.
ALLOW_FN = """
local function breaker_allow(key, now)
  local state = redis.call('HGET', key, 'state')
  if not state or state == 'closed' then return 'closed' end
  if state == 'open' then
    local since = now - tonumber(redis.call('HGET', key, 'opened_at_ms'))
    if since < tonumber(redis.call('HGET', key, 'cooldown_ms')) then return 'open' end
    redis.call('HSET', key, 'state', 'half_open')
    return 'half_open'
  end
  return state
end
"""

_LOOP = LOOP_FN + """
return loop_count(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
"""

_ALLOW = ALLOW_FN + """
return breaker_allow(KEYS[1], tonumber(ARGV[1]))
"""

_RECORD = """
local now = tonumber(ARGV[1])
local ok = ARGV[2] == '1'
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'open' then
  local since = now - tonumber(redis.call('HGET', KEYS[1], 'opened_at_ms'))
  if since < tonumber(redis.call('HGET', KEYS[1], 'cooldown_ms')) then return '' end
  state = 'half_open'
end
if state == 'half_open' then
  if ok then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'calls', 0, 'failures', 0, 'window_start_ms', now)
    return 'closed'
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at_ms', now, 'cooldown_ms', ARGV[6])
  return 'open'
end
local start = tonumber(redis.call('HGET', KEYS[1], 'window_start_ms') or '0')
if now - start > tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'calls', 0, 'failures', 0, 'window_start_ms', now)
end
local calls = redis.call('HINCRBY', KEYS[1], 'calls', 1)
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
if not ok then failures = redis.call('HINCRBY', KEYS[1], 'failures', 1) end
redis.call('HSET', KEYS[1], 'state', 'closed')
if calls >= tonumber(ARGV[4]) and failures / calls >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at_ms', now, 'cooldown_ms', ARGV[6])
  return 'open'
end
return ''
"""


class BreakerState(StrEnum):
    """A circuit breaker's state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens, and for how long."""

    failure_ratio: float = 0.5
    min_calls: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0


@dataclass(frozen=True)
class Halt:
    """Why a task or an agent is halted, and who halted it."""

    reason: str
    by: str

    @classmethod
    def of(cls, what: str, by: str, reason: str) -> Halt:
        """The halt of ``what`` (``task <id>``, ``agent <name>``) as a person reads it."""
        return cls(f"{what} halted by {by}: {reason}", by)


class ControlStore:
    """Halts, loop windows and breakers."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._loop = redis.register_script(_LOOP)
        self._allow = redis.register_script(_ALLOW)
        self._record = redis.register_script(_RECORD)

    def halt_key(self, scope: str, name: str) -> str:
        return f"{self._prefix}halt:{scope}:{name}"

    def breaker_key(self, scope: str, name: str) -> str:
        return f"{self._prefix}breaker:{scope}:{name}"

    def loop_key(self, task_id: str, tool: str, args_hash: str) -> str:
        return f"{self._prefix}{{{task_id}}}:loop:{tool}:{args_hash}"

    async def halt(self, scope: str, name: str, reason: str, by: str) -> None:
        """Halt a task (``scope="task"``) or an agent (``scope="agent"``)."""
        async with unavailable_as_retryable(f"halt {scope} {name}"):
            await self._redis.hset(self.halt_key(scope, name), mapping={"reason": reason, "by": by})

    def restore_halt(self, pipe: Pipeline, scope: str, name: str, reason: str, by: str) -> None:
        """Queue on ``pipe`` a halt read back from the control topic (``handrail.recovery``)."""
        pipe.hset(self.halt_key(scope, name), mapping={"reason": reason, "by": by})

    async def resume(self, scope: str, name: str) -> bool:
        """Lift a halt; False when there was none."""
        async with unavailable_as_retryable(f"resume {scope} {name}"):
            return bool(await self._redis.delete(self.halt_key(scope, name)))

    async def halts(self, task_id: str, agent: str) -> Halt | None:
        """The halt that applies to this task or agent, if any (the task's own first)."""
        async with unavailable_as_retryable(f"check halts for task {task_id}"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(self.halt_key("task", task_id))
            pipe.hgetall(self.halt_key("agent", agent))
            task_halt, agent_halt = await pipe.execute()
        for found, what in ((task_halt, f"task {task_id}"), (agent_halt, f"agent {agent}")):
            if found:
                return Halt.of(what, found.get("by", "?"), found.get("reason", ""))
        return None

    async def count_repeat(
        self, task_id: str, call_id: str, tool: str, args_hash: str, window_s: float, limit: int, now_ms: int
    ) -> tuple[int, bool]:
        """Record one identical call; return (how many within the window, whether it is allowed).

        The same ``call_id`` counts once, so a redelivered step does not count its calls twice.
        """
        key = self.loop_key(task_id, tool, args_hash)
        async with unavailable_as_retryable(f"check the loop window of task {task_id}"):
            count = int(await self._loop(keys=[key], args=[call_id, now_ms, int(window_s * 1000), limit]))
        return abs(count), count > 0

    async def breaker_allows(self, scope: str, name: str, now_ms: int) -> BreakerState:
        """The breaker's state for a call now; an open breaker past its cool-down turns half-open."""
        async with unavailable_as_retryable(f"check the {scope} breaker of {name}"):
            return BreakerState(await self._allow(keys=[self.breaker_key(scope, name)], args=[now_ms]))

    async def record_outcome(
        self, scope: str, name: str, ok: bool, policy: BreakerPolicy, now_ms: int
    ) -> BreakerState | None:
        """Count one call's outcome; return the breaker's new state when it changed."""
        [changed] = await self.record_outcomes([(scope, name, ok, now_ms)], policy)
        return changed

    async def record_outcomes(
        self, outcomes: list[tuple[str, str, bool, int]], policy: BreakerPolicy
    ) -> list[BreakerState | None]:
        """``record_outcome`` for each ``(scope, name, ok, now_ms)``, in order, in one round trip."""
        async with unavailable_as_retryable(f"record {len(outcomes)} outcomes on the breakers"):
            pipe = self._redis.pipeline(transaction=False)
            for scope, name, ok, now_ms in outcomes:
                args = [
                    now_ms,
                    int(ok),
                    policy.failure_ratio,
                    policy.min_calls,
                    int(policy.window_s * 1000),
                    int(policy.cooldown_s * 1000),
                ]
                await self._record(keys=[self.breaker_key(scope, name)], args=args, client=pipe)
            changed = await pipe.execute()
        return [BreakerState(c) if c else None for c in changed]

    async def breaker_state(self, scope: str, name: str) -> BreakerState:
        """The stored state, without side effects."""
        async with unavailable_as_retryable(f"read the {scope} breaker of {name}"):
            state = await self._redis.hget(self.breaker_key(scope, name), "state")
        return BreakerState(str(state) if state else "closed")
