"""Task budgets in Redis: reserve before every model or tool call, settle after.

One Lua script checks and debits together, so any number of workers on the
same task can never push it past a cap. Each task has caps (tokens, cost,
steps, a wall-clock deadline); each agent also has its own caps within the
task. Cost is counted in integer micro-dollars so that increments are exact.

Keys (hash tag ``{task_id}``, same slot as the task record):

- ``<p>{id}:budget``        caps, used and reserved totals, per task and per agent
- ``<p>{id}:reservations``  open reservations: id -> "agent tokens cost_micros steps"

A reservation id is deterministic (derived from the message and call index),
so a redelivered step re-reserves idempotently and settles what a crashed
attempt left open.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from handrail.errors import RetryableError
from handrail.state.client import unavailable_as_retryable
from handrail.state.generation import GuardedScript

log = logging.getLogger(__name__)

#: A settle that failed is tried again after this long, doubling up to the maximum.
_SETTLE_RETRY_S = 0.2
_SETTLE_RETRY_MAX_S = 5.0
#: One US dollar in the integer unit Redis counts cost in.
MICROS_PER_USD = 1_000_000
_DIMENSIONS = ("tokens", "cost", "steps")

_OPEN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'cap:tokens', ARGV[1], 'cap:cost', ARGV[2], 'cap:steps', ARGV[3], 'deadline_ms', ARGV[4],
  'used:tokens', 0, 'used:cost', 0, 'used:steps', 0, 'rsv:tokens', 0, 'rsv:cost', 0, 'rsv:steps', 0)
return 1
"""

_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_task', '', '', '', ''} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'ok', '', '', '', ''} end
local agent = ARGV[2]
local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline_ms'))
if tonumber(ARGV[3]) > deadline then return {'deadline', 'task', 'wall_clock', ARGV[3], tostring(deadline)} end
local dims = {'tokens', 'cost', 'steps'}
for i, d in ipairs(dims) do
  local want = tonumber(ARGV[3 + i])
  if want > 0 then
    local used = tonumber(redis.call('HGET', KEYS[1], 'used:' .. d))
      + tonumber(redis.call('HGET', KEYS[1], 'rsv:' .. d))
    local cap = tonumber(redis.call('HGET', KEYS[1], 'cap:' .. d))
    if used + want > cap then return {'exhausted', 'task', d, tostring(used), tostring(cap)} end
    local aused = tonumber(redis.call('HGET', KEYS[1], 'a:' .. agent .. ':used:' .. d) or '0')
      + tonumber(redis.call('HGET', KEYS[1], 'a:' .. agent .. ':rsv:' .. d) or '0')
    local acap = tonumber(ARGV[6 + i]) + tonumber(redis.call('HGET', KEYS[1], 'a:' .. agent .. ':extra:' .. d) or '0')
    if aused + want > acap then return {'exhausted', 'agent', d, tostring(aused), tostring(acap)} end
  end
end
for i, d in ipairs(dims) do
  local want = tonumber(ARGV[3 + i])
  if want > 0 then
    redis.call('HINCRBY', KEYS[1], 'rsv:' .. d, want)
    redis.call('HINCRBY', KEYS[1], 'a:' .. agent .. ':rsv:' .. d, want)
  end
end
redis.call('HSET', KEYS[2], ARGV[1], agent .. ' ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[6])
return {'ok', '', '', '', ''}
"""

#: A person's grant: raise the task's caps (and the halted agent's own, within the task) and push the deadline
#: back, once per grant id; the totals granted so far are kept against the workflow's ``max_top_up``.
_GRANT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[1], 'grant:' .. ARGV[1], '1') == 0 then return 0 end
local dims = {'tokens', 'cost', 'steps'}
for i, d in ipairs(dims) do
  local more = tonumber(ARGV[2 + i])
  if more > 0 then
    redis.call('HINCRBY', KEYS[1], 'cap:' .. d, more)
    redis.call('HINCRBY', KEYS[1], 'granted:' .. d, more)
    if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[1], 'a:' .. ARGV[2] .. ':extra:' .. d, more) end
  end
end
redis.call('HINCRBY', KEYS[1], 'granted:wall_ms', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'deadline_ms', ARGV[7])
return 1
"""

#: ``settle``: release a reservation and charge what the call used (shared with ``handrail.state.admission``).
SETTLE_FN = """
local function settle(budget, reservations, rid, tokens, cost, steps, charge_to)
  local held = redis.call('HGET', reservations, rid)
  if not held then
    -- A budget rebuilt from Kafka lost its open reservations: charge what a call reserved before the loss used.
    if charge_to == '' or redis.call('HGET', budget, 'rebuilt') ~= '1' then return 0 end
    held = charge_to .. ' 0 0 0'
  end
  local parts = {}
  for p in string.gmatch(held, '%S+') do table.insert(parts, p) end
  local agent = parts[1]
  local actual = {tokens, cost, steps}
  for i, d in ipairs({'tokens', 'cost', 'steps'}) do
    local reserved = tonumber(parts[1 + i])
    if reserved > 0 then
      redis.call('HINCRBY', budget, 'rsv:' .. d, -reserved)
      redis.call('HINCRBY', budget, 'a:' .. agent .. ':rsv:' .. d, -reserved)
    end
    if actual[i] > 0 then
      redis.call('HINCRBY', budget, 'used:' .. d, actual[i])
      redis.call('HINCRBY', budget, 'a:' .. agent .. ':used:' .. d, actual[i])
    end
  end
  redis.call('HDEL', reservations, rid)
  return 1
end
"""

_SETTLE = (
    SETTLE_FN
    + """
return settle(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
"""
)

#: Settle (when ``ARGV[1]`` names a reservation), then read what the task has spent.
_SETTLE_AND_READ = (
    SETTLE_FN
    + """
if ARGV[1] ~= '' then
  settle(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
end
return redis.call('HMGET', KEYS[1], 'used:tokens', 'used:cost', 'used:steps')
"""
)


def reserve_script() -> str:
    """The reserve script's Lua, for a script that checks more before it reserves (it must come last: it returns)."""
    return _RESERVE


@dataclass(frozen=True)
class Settlement:
    """A call's settlement not yet sent: it goes with the task's next budget script (fewer round trips)."""

    reservation_id: str
    actual: Amount
    agent: str

    def as_args(self) -> list[str | int]:
        """``rid, tokens, cost (micro-USD), steps, agent``: the ``settle`` function's arguments."""
        return [self.reservation_id, *self.actual.as_args(), self.agent]


class Verdict(StrEnum):
    """What a reservation found."""

    OK = "ok"
    EXHAUSTED = "exhausted"
    DEADLINE = "deadline"
    UNKNOWN_TASK = "unknown_task"


@dataclass(frozen=True)
class Amount:
    """What a call may spend (a reservation) or did spend (a settlement)."""

    tokens: int = 0
    cost_usd: float = 0.0
    steps: int = 0

    def as_args(self) -> list[int]:
        # Round cost up: a reservation must never be smaller than what it stands for.
        return [self.tokens, math.ceil(self.cost_usd * MICROS_PER_USD - 1e-9), self.steps]


@dataclass(frozen=True)
class Caps:
    """Caps for a task or for one agent within a task."""

    tokens: int
    cost_usd: float
    steps: int


@dataclass(frozen=True)
class Reservation:
    """The outcome of ``reserve``: ``OK``, or which cap (``scope``, ``dimension``) would be passed."""

    verdict: Verdict
    scope: str = ""  # task | agent
    dimension: str = ""  # tokens | cost | steps | wall_clock
    used: str = ""
    cap: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == Verdict.OK

    def describe(self) -> str:
        """A sentence for the task's result."""
        if self.verdict == Verdict.DEADLINE:
            return "the task's deadline has passed"
        if self.verdict == Verdict.UNKNOWN_TASK:
            return "the task has no budget (it was never opened)"
        used, cap = self.used, self.cap
        if self.dimension == "cost":
            used, cap = f"{int(used) / MICROS_PER_USD:.6f} USD", f"{int(cap) / MICROS_PER_USD:.6f} USD"
        return f"{self.scope} budget for {self.dimension} exhausted: {used} used or reserved of {cap}"


@dataclass(frozen=True)
class Usage:
    """What a task has spent (settled) so far."""

    tokens: int
    cost_usd: float
    steps: int


@dataclass(frozen=True)
class Grant:
    """A person's grant to one task: ``extra`` on its caps (and its ``agent``'s own), ``extend_ms`` on its deadline.

    ``wall_ms`` is the part of ``extend_ms`` that was granted (counted against the workflow's
    ``max_top_up``); the rest gives back the time the task was parked for review.
    """

    task_id: str
    grant_id: str
    agent: str
    extra: Amount
    wall_ms: int = 0
    extend_ms: int = 0


@dataclass(frozen=True)
class Granted:
    """What people granted one task so far."""

    extra: Amount
    wall_ms: int


class UnknownBudget(RetryableError):
    """The task has no budget in Redis (not opened yet, or lost with a state a rebuild brings back)."""


class BudgetStore:
    """Reserve-and-settle budgets per task and agent, in Redis."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._open = GuardedScript(redis, _OPEN, prefix)
        self._reserve = GuardedScript(redis, _RESERVE, prefix)
        self._settle = GuardedScript(redis, _SETTLE, prefix)
        self._settle_and_read = GuardedScript(redis, _SETTLE_AND_READ, prefix)
        self._grant = GuardedScript(redis, _GRANT, prefix)

    def keys(self, task_id: str) -> list[str]:
        """The task's budget and reservations keys (``KEYS[1]``, ``KEYS[2]`` of every budget script)."""
        base = f"{self._prefix}{{{task_id}}}"
        return [f"{base}:budget", f"{base}:reservations"]

    async def open(self, task_id: str, caps: Caps, deadline_ms: int) -> bool:
        """Create the task's budget; False when it already exists (a redelivery)."""
        args = [*_cap_args(Amount(caps.tokens, caps.cost_usd, caps.steps)), deadline_ms]
        async with unavailable_as_retryable(f"open the budget of task {task_id}"):
            return bool(await self._open(keys=self.keys(task_id), args=args))

    async def reserve(
        self, task_id: str, reservation_id: str, agent: str, amount: Amount, agent_caps: Caps, now_ms: int
    ) -> Reservation:
        """Hold ``amount`` against the task's and the agent's caps, or say which cap it would pass."""
        args = self.reserve_args(reservation_id, agent, amount, agent_caps, now_ms)
        async with unavailable_as_retryable(f"reserve budget for task {task_id}"):
            verdict, scope, dimension, used, cap = await self._reserve(keys=self.keys(task_id), args=args)
        return Reservation(Verdict(verdict), scope, dimension, used, cap)

    @staticmethod
    def reserve_args(reservation_id: str, agent: str, amount: Amount, agent_caps: Caps, now_ms: int) -> list[str | int]:
        """``ARGV[1..9]`` of the reserve script (here and in ``handrail.state.admission``)."""
        agent_args = Amount(agent_caps.tokens, agent_caps.cost_usd, agent_caps.steps).as_args()
        return [reservation_id, agent, now_ms, *amount.as_args(), *agent_args]

    async def settle(self, task_id: str, reservation_id: str, actual: Amount, agent: str = "") -> None:
        """Release the reservation and charge what was actually used; a second settle is a no-op.

        The call has been made and paid for: a settle that cannot reach Redis, or finds it lost its
        state, waits and tries again rather than forget the spend. On a budget rebuilt from Kafka,
        a reservation made before the loss is gone; its spend is charged to ``agent`` all the same
        (counting a call twice errs on the safe side; never counting it would not).
        """
        delay_s = _SETTLE_RETRY_S
        while True:
            try:
                async with unavailable_as_retryable(f"settle budget for task {task_id}"):
                    await self._settle(keys=self.keys(task_id), args=[reservation_id, *actual.as_args(), agent])
                return
            except RetryableError as exc:
                log.warning("settling %s of task %s: %s; trying again in %.1fs", reservation_id, task_id, exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, _SETTLE_RETRY_MAX_S)

    async def grant(self, grant: Grant) -> bool:
        """Apply a person's grant (more budget, a later deadline); False when it was applied before.

        Raises ``UnknownTask`` (retryable: a rebuild may bring it back) when the task has no budget.
        """
        args: list[str | int] = [grant.grant_id, grant.agent, *_cap_args(grant.extra), grant.wall_ms, grant.extend_ms]
        async with unavailable_as_retryable(f"grant budget to task {grant.task_id}"):
            applied = int(await self._grant(keys=self.keys(grant.task_id), args=args))
        if applied < 0:
            raise UnknownBudget(f"task {grant.task_id} has no budget to grant more to")
        return applied == 1

    async def granted(self, task_id: str) -> Granted:
        """What people granted the task so far, all grants together."""
        async with unavailable_as_retryable(f"read the budget of task {task_id}"):
            tokens, cost, steps, wall_ms = await self._redis.hmget(
                self.keys(task_id)[0], ["granted:tokens", "granted:cost", "granted:steps", "granted:wall_ms"]
            )
        return Granted(Amount(int(tokens or 0), int(cost or 0) / MICROS_PER_USD, int(steps or 0)), int(wall_ms or 0))

    def restore(
        self,
        pipe: Pipeline,
        task_id: str,
        caps: Caps,
        deadline_ms: int,
        used: Amount,
        used_by_agent: dict[str, Amount],
        grants: Sequence[Grant] = (),
    ) -> None:
        """Queue on ``pipe`` the writes that put back a task's budget (``handrail.recovery``).

        ``caps`` and ``deadline_ms`` are the opening's; ``grants`` are applied on top, each once.
        Open reservations are not on Kafka: the budget is marked ``rebuilt`` so that a settle of
        one made before the loss still charges its spend.
        """
        granted = [0, 0, 0]
        by_agent: dict[str, list[int]] = {}
        wall_ms = extend_ms = 0
        fields: dict[FieldT, EncodableT] = {}
        for one in grants:
            fields[f"grant:{one.grant_id}"] = "1"
            for i, more in enumerate(_cap_args(one.extra)):
                granted[i] += more
                if one.agent:
                    by_agent.setdefault(one.agent, [0, 0, 0])[i] += more
            wall_ms += one.wall_ms
            extend_ms += one.extend_ms
        opening = _cap_args(Amount(caps.tokens, caps.cost_usd, caps.steps))
        for dimension, cap, more in zip(_DIMENSIONS, opening, granted, strict=True):
            fields[f"cap:{dimension}"] = cap + more
            fields[f"granted:{dimension}"] = more
        for agent, extra in by_agent.items():
            for dimension, more in zip(_DIMENSIONS, extra, strict=True):
                fields[f"a:{agent}:extra:{dimension}"] = more
        fields["granted:wall_ms"] = wall_ms
        fields["deadline_ms"] = deadline_ms + extend_ms
        fields["rebuilt"] = "1"
        for scope, amount in [("", used), *((f"a:{agent}:", a) for agent, a in used_by_agent.items())]:
            for dimension, value in zip(_DIMENSIONS, amount.as_args(), strict=True):
                fields[f"{scope}used:{dimension}"] = value
                fields[f"{scope}rsv:{dimension}"] = 0
        keys = self.keys(task_id)
        pipe.delete(*keys)
        pipe.hset(keys[0], mapping=fields)

    async def settle_and_usage(self, task_id: str, pending: Settlement | None) -> Usage:
        """Settle ``pending`` (if any) and read what the task has spent, in one round trip.

        Like ``settle``, a settlement is never given up: when Redis cannot take it, it is settled
        alone (waiting for Redis) before the error goes up.
        """
        args: list[str | int] = ["", 0, 0, 0, ""] if pending is None else pending.as_args()
        try:
            async with unavailable_as_retryable(f"settle and read the budget of task {task_id}"):
                tokens, cost, steps = await self._settle_and_read(keys=self.keys(task_id), args=args)
        except RetryableError:
            if pending is not None:
                await self.settle(task_id, pending.reservation_id, pending.actual, pending.agent)
            raise
        return Usage(int(tokens or 0), int(cost or 0) / MICROS_PER_USD, int(steps or 0))

    async def usage(self, task_id: str) -> Usage:
        """What the task has spent so far (settled amounts only)."""
        async with unavailable_as_retryable(f"read the budget of task {task_id}"):
            tokens, cost, steps = await self._redis.hmget(
                self.keys(task_id)[0], ["used:tokens", "used:cost", "used:steps"]
            )
        return Usage(int(tokens or 0), int(cost or 0) / MICROS_PER_USD, int(steps or 0))


def _cap_args(amount: Amount) -> list[int]:
    """A cap (or more of one) in Redis's units; cost rounded down: a cap must never be more than it says."""
    return [amount.tokens, math.floor(amount.cost_usd * MICROS_PER_USD + 1e-9), amount.steps]
