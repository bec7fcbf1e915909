"""Admitting one model or tool call: every check before it, and its budget reservation, in one round trip.

A worker asks before each call: is the task or its agent halted, is the agent's
breaker open (model calls), is this the same tool call once too often within the
loop window, is the tool's breaker open (tool calls), and does the budget hold
what the call may spend. Asked one by one that was four or five Redis round trips
per call; here it is one script, so the answer is also one consistent moment: no
reservation is taken for a call that a halt, a breaker or the loop window stops.

The checks themselves are the ones ``ControlStore`` and ``BudgetStore`` run alone
(their Lua is shared, not copied). The previous call's settlement rides along and is
applied first, so a step's calls cost one round trip each, and the last one is
settled with the read of what the task spent (``BudgetStore.settle_and_usage``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis

from handrail.errors import RetryableError
from handrail.state.budgets import (
    SETTLE_FN,
    Amount,
    BudgetStore,
    Caps,
    Reservation,
    Settlement,
    Verdict,
    reserve_script,
)
from handrail.state.client import unavailable_as_retryable
from handrail.state.controls import ALLOW_FN, LOOP_FN, ControlStore, Halt
from handrail.state.generation import GuardedScript

# KEYS: 1 budget, 2 reservations (BudgetStore's), 3 breaker, 4 loop window (tools).
# ARGV: 1-9 as BudgetStore's reserve (reservation id, agent, now, amount, agent caps),
#       10 the breaker's role ('halts': an open agent breaker stops the task; 'short_circuits': an open tool
#       breaker is an error the model sees), 11 loop call id ('' for none), 12 loop window ms, 13 loop limit,
#       14-18 the previous call's settlement (reservation id or '', tokens, cost, steps, agent): applied first,
#       whatever the checks find, so this call is judged on what the last one really spent,
#       19 the task's halt key, 20 the agent's: only read here, so not KEYS (a script's KEYS must be
#       writable by its caller, and a worker's Redis user may only read halts: handrail.state.acl).
_ADMIT = (
    ALLOW_FN
    + LOOP_FN
    + SETTLE_FN
    + """
if ARGV[14] ~= '' then
  settle(KEYS[1], KEYS[2], ARGV[14], tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17]), ARGV[18])
end
for i = 19, 20 do
  local by = redis.call('HGET', ARGV[i], 'by')
  if by then
    local h = redis.call('HMGET', ARGV[i], 'reason', 'error_type')
    return {'halted', tostring(i - 18), by, h[1] or '', h[2] or ''}
  end
end
local now = tonumber(ARGV[3])
if ARGV[10] == 'halts' and breaker_allow(KEYS[3], now) == 'open' then return {'breaker_open', '', '', '', ''} end
if ARGV[11] ~= '' then
  local count = loop_count(KEYS[4], ARGV[11], now, tonumber(ARGV[12]), tonumber(ARGV[13]))
  if count < 0 then return {'loop_detected', tostring(-count), '', '', ''} end
end
if ARGV[10] == 'short_circuits' and breaker_allow(KEYS[3], now) == 'open' then
  return {'short_circuited', '', '', '', ''}
end
"""
    + reserve_script()
)


class Admit(StrEnum):
    """What asking before a call found; anything but ``RESERVED`` means no reservation was taken."""

    RESERVED = "reserved"  # every check passed and the budget holds the call: go
    HALTED = "halted"  # an operator (or a trip) halted the task or its agent
    BREAKER_OPEN = "breaker_open"  # the agent's breaker is open: the task halts
    LOOP_DETECTED = "loop_detected"  # the same tool call once too often within the window
    SHORT_CIRCUITED = "short_circuited"  # the tool's breaker is open: the model sees an error
    REFUSED = "refused"  # the budget (or the deadline) does not hold the call: see ``reservation``


@dataclass(frozen=True)
class Admission:
    """The answer for one call."""

    outcome: Admit
    halt: Halt | None = None
    repeats: int = 0
    reservation: Reservation | None = None


@dataclass(frozen=True)
class LoopWindow:
    """A tool call's place in its loop window: ``call_id`` counts once, however often it is asked."""

    tool: str
    args_hash: str
    call_id: str
    window_s: float
    limit: int


class Admissions:
    """Asks Redis, once per call, whether a call may go ahead, and reserves its budget if so."""

    def __init__(self, redis: aioredis.Redis, budgets: BudgetStore, controls: ControlStore, prefix: str) -> None:
        self._budgets = budgets
        self._controls = controls
        self._admit = GuardedScript(redis, _ADMIT, prefix)

    async def admit(
        self,
        task_id: str,
        agent: str,
        reservation_id: str,
        amount: Amount,
        agent_caps: Caps,
        now_ms: int,
        *,
        breaker: tuple[str, str] | None = None,
        loop: LoopWindow | None = None,
        settle: Settlement | None = None,
    ) -> Admission:
        """Settle the previous call (``settle``), check the halts, the ``breaker`` (``("agent", name)``
        halts, ``("tool", name)`` short-circuits), the ``loop`` window, then reserve ``amount``: one atomic step.

        A settlement is never lost: when Redis cannot take the script, it is settled alone (waiting
        for Redis, ``BudgetStore.settle``) before the error goes up.
        """
        scope, name = breaker or ("agent", agent)
        role = "" if breaker is None else "halts" if scope == "agent" else "short_circuits"
        keys = [
            *self._budgets.keys(task_id),
            self._controls.breaker_key(scope, name),
            self._controls.loop_key(task_id, loop.tool, loop.args_hash) if loop else self._budgets.keys(task_id)[0],
        ]
        args: list[str | int] = [
            *self._budgets.reserve_args(reservation_id, agent, amount, agent_caps, now_ms),
            role,
            loop.call_id if loop else "",
            int(loop.window_s * 1000) if loop else 0,
            loop.limit if loop else 0,
            *(settle.as_args() if settle else ["", 0, 0, 0, ""]),
            self._controls.halt_key("task", task_id),
            self._controls.halt_key("agent", agent),
        ]
        try:
            async with unavailable_as_retryable(f"admit a call of task {task_id}"):
                verdict, first, second, third, fourth = await self._admit(keys=keys, args=args)
        except RetryableError:
            if settle is not None:
                await self._budgets.settle(task_id, settle.reservation_id, settle.actual, settle.agent)
            raise
        match verdict:
            case "halted":
                what = f"task {task_id}" if first == "1" else f"agent {agent}"
                return Admission(Admit.HALTED, halt=Halt.of(what, second, third, fourth))
            case "breaker_open":
                return Admission(Admit.BREAKER_OPEN)
            case "loop_detected":
                return Admission(Admit.LOOP_DETECTED, repeats=int(first))
            case "short_circuited":
                return Admission(Admit.SHORT_CIRCUITED)
        reservation = Reservation(Verdict(verdict), first, second, third, fourth)
        return Admission(Admit.RESERVED if reservation.ok else Admit.REFUSED, reservation=reservation)
