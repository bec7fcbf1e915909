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
from redis.typing import EncodableT, FieldT

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

_LOOP = (
    LOOP_FN
    + """
return loop_count(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
"""
)

_ALLOW = (
    ALLOW_FN
    + """
return breaker_allow(KEYS[1], tonumber(ARGV[1]))
"""
)

#: Count a batch of outcomes on one breaker, in order, as if each were counted alone: the hash is read
#: once, the state machine runs in Lua, and what changed is written once. ARGV: 1 failure ratio,
#: 2 min calls, 3 window ms, 4 cooldown ms, then (now ms, ok '1'/'0') per outcome. Returns, per outcome,
#: the breaker's new state when that outcome changed it, else ''.
_RECORD = """
local ratio, min_calls = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'state', 'opened_at_ms', 'cooldown_ms', 'window_start_ms', 'calls', 'failures')
local state = h[1] or 'closed'
local opened, cool = tonumber(h[2] or '0'), tonumber(h[3] or '0')
local start, calls, failures = tonumber(h[4] or '0'), tonumber(h[5] or '0'), tonumber(h[6] or '0')
local changes, dirty = {}, false
for i = 5, #ARGV, 2 do
  local now, ok = tonumber(ARGV[i]), ARGV[i + 1] == '1'
  local change = ''
  if state == 'open' and now - opened >= cool then state = 'half_open' end
  if state == 'half_open' then
    if ok then
      state, calls, failures, start = 'closed', 0, 0, now
    else
      state, opened, cool = 'open', now, cooldown
    end
    change, dirty = state, true
  elseif state ~= 'open' then
    if now - start > window then calls, failures, start = 0, 0, now end
    calls = calls + 1
    if not ok then failures = failures + 1 end
    state, dirty = 'closed', true
    if calls >= min_calls and failures / calls >= ratio then
      state, opened, cool, change = 'open', now, cooldown, 'open'
    end
  end
  changes[#changes + 1] = change
end
if dirty then
  redis.call('HSET', KEYS[1], 'state', state, 'opened_at_ms', opened, 'cooldown_ms', cool,
    'window_start_ms', start, 'calls', calls, 'failures', failures)
end
return changes
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
    #: What a step it stops is reported as (``behaviour_deviation``...); empty: by who halted it.
    error_type: str = ""

    @classmethod
    def of(cls, what: str, by: str, reason: str, error_type: str = "") -> Halt:
        """The halt of ``what`` (``task <id>``, ``agent <name>``) as a person reads it."""
        return cls(f"{what} halted by {by}: {reason}", by, error_type)


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

    async def halt(self, scope: str, name: str, reason: str, by: str, error_type: str = "") -> None:
        """Halt a task (``scope="task"``) or an agent (``scope="agent"``)."""
        async with unavailable_as_retryable(f"halt {scope} {name}"):
            await self._redis.hset(self.halt_key(scope, name), mapping=_halt_fields(reason, by, error_type))

    def restore_halt(self, pipe: Pipeline, scope: str, name: str, reason: str, by: str, error_type: str = "") -> None:
        """Queue on ``pipe`` a halt read back from the control topic (``handrail.recovery``)."""
        pipe.hset(self.halt_key(scope, name), mapping=_halt_fields(reason, by, error_type))

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
                return Halt.of(what, found.get("by", "?"), found.get("reason", ""), found.get("error_type", ""))
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
        """``record_outcome`` for each ``(scope, name, ok, now_ms)``, in one round trip: one script per
        breaker, its outcomes in the order given (outcomes of different breakers are independent)."""
        by_key: dict[str, list[int]] = {}
        for at, (scope, name, _, _) in enumerate(outcomes):
            by_key.setdefault(self.breaker_key(scope, name), []).append(at)
        window_ms, cooldown_ms = int(policy.window_s * 1000), int(policy.cooldown_s * 1000)
        policy_args = [policy.failure_ratio, policy.min_calls, window_ms, cooldown_ms]
        async with unavailable_as_retryable(f"record {len(outcomes)} outcomes on the breakers"):
            pipe = self._redis.pipeline(transaction=False)
            for key, positions in by_key.items():
                args = [*policy_args]
                for at in positions:
                    args += [outcomes[at][3], int(outcomes[at][2])]
                await self._record(keys=[key], args=args, client=pipe)
            answers = await pipe.execute()
        changed: list[BreakerState | None] = [None] * len(outcomes)
        for positions, answer in zip(by_key.values(), answers, strict=True):
            for at, change in zip(positions, answer, strict=True):
                changed[at] = BreakerState(change) if change else None
        return changed

    async def breaker_state(self, scope: str, name: str) -> BreakerState:
        """The stored state, without side effects."""
        async with unavailable_as_retryable(f"read the {scope} breaker of {name}"):
            state = await self._redis.hget(self.breaker_key(scope, name), "state")
        return BreakerState(str(state) if state else "closed")


def _halt_fields(reason: str, by: str, error_type: str) -> dict[FieldT, EncodableT]:
    return {"reason": reason, "by": by, **({"error_type": error_type} if error_type else {})}
