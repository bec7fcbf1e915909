"""Canary cohorts in Redis: which version each task ran, and each version's tasks over the window.

``handrail.prompts.canary`` says what a canary is. Keys (``<c>`` the canary's id):

- ``<p>canary:<c>:task:<id>``: one task of the canary (hash: ``arm``, set by its model calls'
  events, ``candidate`` once any call ran the candidate; ``counted`` once its result is counted;
  one ``r:<review>`` per review request counted). A result or a review read again counts once.
  One read before the task's events (the circuit-breaker reads the topics apart) waits in the hash
  as ``p:<flag>`` (for ``PENDING_TTL_S``) and is counted when the events mark the task.
- ``<p>canary:<c>:<arm>:<slot>``: the tasks of one version that ended within one slot of time
  (``window_s / SLOTS`` long): ``tasks``, ``failed``, ``rejected``, ``reviewed``, ``cost``.

Everything expires. They are counted, not recorded: after Redis comes back empty the canary
itself is gone (every task runs the live version), so there is nothing to rebuild.
"""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis

from handrail.messages import TaskResult, TaskStatus
from handrail.prompts.canary import Arm, Canary, Cohort
from handrail.state.client import unavailable_as_retryable

#: How long a task of a canary is remembered after its last event: longer than a task waits for a person.
TASK_TTL_S = 7 * 24 * 3600
#: The window is summed from this many slots (and the one being filled).
SLOTS = 12

#: Count one flag of a task (its end, or one review) into its arm's slot, once.
_COUNT_FN = """
local function count(task, candidate_slot, live_slot, arm, flag, ttl, field, cost, whole, failed, rejected)
  if redis.call('HSETNX', task, flag, '1') == 0 then return '' end
  local slot = candidate_slot
  if arm == 'live' then slot = live_slot end
  redis.call('HINCRBY', slot, field, 1)
  if cost ~= '' then redis.call('HINCRBYFLOAT', slot, 'cost', cost) end
  if whole == '1' then
    redis.call('HINCRBY', slot, 'failed', failed)
    redis.call('HINCRBY', slot, 'rejected', rejected)
  end
  redis.call('EXPIRE', slot, ttl)
  return arm
end
"""

#: KEYS: task hash, then the slot of each arm now (candidate, live). ARGV: 1 arm, 2 task ttl s, 3 slot
#: ttl s. The candidate arm sticks: a task that ran it once is its. What was counted before the task
#: had an arm (its events came after its end: the topics are read apart) is counted now, once.
_MARK = (
    _COUNT_FN
    + """
if ARGV[1] == 'candidate' then redis.call('HSET', KEYS[1], 'arm', 'candidate')
else redis.call('HSETNX', KEYS[1], 'arm', 'live') end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local arm = redis.call('HGET', KEYS[1], 'arm')
local counted = ''
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 2) == 'p:' then
    local a = cjson.decode(redis.call('HGET', KEYS[1], name))
    redis.call('HDEL', KEYS[1], name)
    if count(KEYS[1], KEYS[2], KEYS[3], arm, string.sub(name, 3), ARGV[3], a[1], a[2], a[3], a[4], a[5]) ~= '' then
      counted = arm
    end
  end
end
return counted
"""
)

#: KEYS: task hash, then the slot of each arm (candidate, live). ARGV: 1 flag field, 2 slot ttl s,
#: 3 field to add 1 to, 4 cost ('' none), 5 whether the result's other fields count ('1'), 6 failed,
#: 7 rejected, 8 how long a count waits for the task's arm (s). Counts once per flag, into the task's
#: arm; a task with no arm yet keeps the count (``p:<flag>``) for its mark.
_COUNT = (
    _COUNT_FN
    + """
local arm = redis.call('HGET', KEYS[1], 'arm')
if arm then
  return count(KEYS[1], KEYS[2], KEYS[3], arm, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], cjson.encode({ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]}))
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[8]) end
end
return ''
"""
)

#: How long the end or a review of a task with no arm yet waits for its events.
PENDING_TTL_S = 3600


class CanaryCohorts:
    """The figures of running canaries (the circuit-breaker's; ``handrail prompts canary AGENT`` reads them)."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._mark = redis.register_script(_MARK)
        self._count = redis.register_script(_COUNT)

    def _task(self, canary: Canary, task_id: str) -> str:
        return f"{self._prefix}canary:{canary.id}:task:{task_id}"

    def _slot(self, canary: Canary, arm: Arm, slot: int) -> str:
        return f"{self._prefix}canary:{canary.id}:{arm.value}:{slot}"

    @staticmethod
    def _slot_s(window_s: float) -> float:
        return max(window_s / SLOTS, 0.001)

    def _slots_now(self, canary: Canary, window_s: float, now: float | None) -> tuple[list[str], int]:
        slot = int((time.time() if now is None else now) // self._slot_s(window_s))
        ttl = math.ceil(self._slot_s(window_s) * (SLOTS + 2))
        return [self._slot(canary, Arm.CANDIDATE, slot), self._slot(canary, Arm.LIVE, slot)], ttl

    async def mark(
        self, canary: Canary, task_id: str, arm: Arm, window_s: float, now: float | None = None
    ) -> Arm | None:
        """A model call of the task ran ``arm``'s version. The task's arm, when what was counted of it before
        it had one (its end, a review) is counted now; None otherwise."""
        slots, ttl = self._slots_now(canary, window_s, now)
        async with unavailable_as_retryable(f"mark task {task_id} in a canary"):
            counted = await self._mark(keys=[self._task(canary, task_id), *slots], args=[arm.value, TASK_TTL_S, ttl])
        return _arm(counted)

    async def count_result(
        self, canary: Canary, result: TaskResult, window_s: float, now: float | None = None
    ) -> Arm | None:
        """Count a task's end into its arm's slot, once; the arm, or None (not the canary's, or counted)."""
        slots, ttl = self._slots_now(canary, window_s, now)
        failed = result.status in (TaskStatus.FAILED, TaskStatus.HALTED)
        rejected = result.status == TaskStatus.REJECTED
        async with unavailable_as_retryable(f"count task {result.task_id} into a canary"):
            arm = await self._count(
                keys=[self._task(canary, result.task_id), *slots],
                args=["counted", ttl, "tasks", repr(result.cost_usd), "1", int(failed), int(rejected), PENDING_TTL_S],
            )
        return _arm(arm)

    async def count_review(
        self, canary: Canary, task_id: str, review_id: str, window_s: float, now: float | None = None
    ) -> Arm | None:
        """Count a review request of a task into its arm's slot, once per review."""
        slots, ttl = self._slots_now(canary, window_s, now)
        async with unavailable_as_retryable(f"count a review of task {task_id} into a canary"):
            arm = await self._count(
                keys=[self._task(canary, task_id), *slots],
                args=[f"r:{review_id}", ttl, "reviewed", "", "0", 0, 0, PENDING_TTL_S],
            )
        return _arm(arm)

    async def figures(self, canary: Canary, window_s: float, now: float | None = None) -> dict[Arm, Cohort]:
        """Each version's tasks over the last ``window_s`` seconds."""
        last = int((time.time() if now is None else now) // self._slot_s(window_s))
        slots = range(last - SLOTS + 1, last + 1)
        what = f"read the figures of the canary of {canary.agent}"
        async with unavailable_as_retryable(what), self._redis.pipeline(transaction=False) as pipe:
            for arm in Arm:
                for slot in slots:
                    pipe.hgetall(self._slot(canary, arm, slot))
            replies = await pipe.execute()
        found: dict[Arm, Cohort] = {}
        for index, arm in enumerate(Arm):
            total = {"tasks": 0.0, "failed": 0.0, "rejected": 0.0, "reviewed": 0.0, "cost": 0.0}
            for reply in replies[index * len(slots) : (index + 1) * len(slots)]:
                for field, value in reply.items():
                    name = field.decode() if isinstance(field, bytes) else str(field)
                    if name in total:
                        total[name] += float(value)
            found[arm] = Cohort(
                tasks=int(total["tasks"]),
                failed=int(total["failed"]),
                rejected=int(total["rejected"]),
                reviewed=int(total["reviewed"]),
                cost_usd=total["cost"],
            )
        return found


def _arm(value: object) -> Arm | None:
    text = value.decode() if isinstance(value, bytes) else str(value or "")
    return Arm(text) if text else None
