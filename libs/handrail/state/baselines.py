"""Behavioural baselines in Redis (``handrail.baselines`` says what they mean).

- ``<p>baseline:task:<id>``: each agent's running figures in the task (hash fields
  ``<agent>|cost``, ``|tools``, ``|calls``, ``|errors``, ``|steps``, one ``|s|<step>`` per step
  counted, one ``|flag|<measure>`` per deviation acted on), with ``<p>baseline:seen:<id>``
  the event batches already counted: a batch read again counts once.
- ``<p>baseline:agent:<name>``: the agent's baseline (``tasks`` and one mean per measure).

Both expire: a task that never finishes leaves nothing behind for long. They are
learnt, not recorded: a Redis that comes back empty learns them again from the
next tasks (nothing is judged during a warm-up), so they are not rebuilt from Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from handrail.baselines import Baseline, Figures, Measure
from handrail.state.client import unavailable_as_retryable

#: How long a task's running figures are kept after its last event.
TASK_TTL_MS = 7 * 24 * 3600 * 1000

#: Count one event batch of one agent into the task's figures (once per batch id), and read back the
#: figures, the flags already raised and the agent's baseline. KEYS: task hash, seen set, agent hash.
#: ARGV: 1 batch id, 2 agent, 3 ttl ms, 4 cost, 5 tool calls, 6 calls, 7 errors, 8 step ('' none).
_OBSERVE = """
local a = ARGV[2]
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[1], a .. '|cost', ARGV[4])
  redis.call('HINCRBY', KEYS[1], a .. '|tools', ARGV[5])
  redis.call('HINCRBY', KEYS[1], a .. '|calls', ARGV[6])
  redis.call('HINCRBY', KEYS[1], a .. '|errors', ARGV[7])
  if ARGV[8] ~= '' and redis.call('HSETNX', KEYS[1], a .. '|s|' .. ARGV[8], '1') == 1 then
    redis.call('HINCRBY', KEYS[1], a .. '|steps', 1)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local figures = redis.call('HMGET', KEYS[1], a .. '|cost', a .. '|steps', a .. '|tools', a .. '|calls', a .. '|errors',
  a .. '|flag|cost_usd', a .. '|flag|steps', a .. '|flag|tool_calls_per_step', a .. '|flag|error_rate')
local baseline = redis.call('HMGET', KEYS[3], 'tasks', 'cost_usd', 'steps', 'tool_calls_per_step', 'error_rate')
return {figures, baseline}
"""

#: A completed task's figures folded into each of its agents' baselines, once: the task's hash goes.
#: KEYS: task hash, seen set, then one baseline hash per agent. ARGV: 1 ttl ms, then per agent its name
#: and its window (tasks).
_FOLD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #KEYS do
  local a, window = ARGV[2 * i - 4], tonumber(ARGV[2 * i - 3])
  local f = redis.call('HMGET', KEYS[1], a .. '|cost', a .. '|steps', a .. '|tools', a .. '|calls', a .. '|errors')
  if f[4] then
    local steps, calls = tonumber(f[2] or '0'), tonumber(f[4] or '0')
    local values = {
      cost_usd = tonumber(f[1] or '0'),
      steps = steps,
      tool_calls_per_step = tonumber(f[3] or '0') / math.max(steps, 1),
      error_rate = calls > 0 and tonumber(f[5] or '0') / calls or 0,
    }
    local n = tonumber(redis.call('HGET', KEYS[i], 'tasks') or '0') + 1
    local w = math.max(1 / n, 2 / (window + 1))
    redis.call('HSET', KEYS[i], 'tasks', n)
    for measure, value in pairs(values) do
      local mean = tonumber(redis.call('HGET', KEYS[i], measure) or tostring(value))
      redis.call('HSET', KEYS[i], measure, tostring(mean + w * (value - mean)))
    end
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

#: The measures in the order the scripts return their flags and means.
_MEASURES = (Measure.COST_USD, Measure.STEPS, Measure.TOOL_CALLS_PER_STEP, Measure.ERROR_RATE)


@dataclass(frozen=True)
class Observed:
    """What one counted batch leaves: the agent's figures in the task, what was flagged, its baseline."""

    figures: Figures
    flagged: frozenset[Measure]
    baseline: Baseline


@dataclass(frozen=True)
class Observation:
    """One batch's events of one agent, to count into its task's figures (``BaselineStore.observe``)."""

    task_id: str
    agent: str
    batch_id: str
    delta: Figures
    step: str
    ttl_ms: int = TASK_TTL_MS


def _observed(figures: list[Any], baseline: list[Any]) -> Observed:
    cost, steps, tools, calls, errors, *flags = figures
    tasks, *means = baseline
    return Observed(
        figures=Figures(float(cost or 0), int(steps or 0), int(tools or 0), int(calls or 0), int(errors or 0)),
        flagged=frozenset(m for m, flag in zip(_MEASURES, flags, strict=True) if flag),
        baseline=Baseline(
            int(tasks or 0), tuple((m, float(v)) for m, v in zip(_MEASURES, means, strict=True) if v is not None)
        ),
    )


class BaselineStore:
    """Tasks' running figures and agents' baselines."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._observe = redis.register_script(_OBSERVE)
        self._fold = redis.register_script(_FOLD)

    def task_key(self, task_id: str) -> str:
        return f"{self._prefix}baseline:task:{task_id}"

    def seen_key(self, task_id: str) -> str:
        return f"{self._prefix}baseline:seen:{task_id}"

    def agent_key(self, agent: str) -> str:
        return f"{self._prefix}baseline:agent:{agent}"

    async def observe(
        self, task_id: str, agent: str, batch_id: str, delta: Figures, step: str, *, ttl_ms: int = TASK_TTL_MS
    ) -> Observed:
        """Count ``delta`` (one batch's events of ``agent``; ``delta.steps`` is ignored: ``step`` counts
        once per task) into the task's figures, unless ``batch_id`` was counted before."""
        return (await self.observe_all([Observation(task_id, agent, batch_id, delta, step, ttl_ms)]))[0]

    async def observe_all(self, observations: list[Observation]) -> list[Observed]:
        """``observe`` each of ``observations``, in order, in one round trip."""
        if not observations:
            return []
        first = observations[0].task_id
        what = f"count the figures of task {first}" + (f" and {len(observations) - 1} more" if observations[1:] else "")
        async with unavailable_as_retryable(what), self._redis.pipeline(transaction=False) as pipe:
            for o in observations:
                keys = [self.task_key(o.task_id), self.seen_key(o.task_id), self.agent_key(o.agent)]
                d = o.delta
                args: list[str | int] = [
                    o.batch_id, o.agent, o.ttl_ms, repr(d.cost_usd), d.tool_calls, d.calls, d.errors, o.step
                ]  # fmt: skip
                await self._observe(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        return [_observed(figures, baseline) for figures, baseline in replies]

    async def flag(self, task_id: str, agent: str, measure: Measure) -> None:
        """Note that ``measure``'s deviation in the task was acted on (after acting: acting is idempotent)."""
        async with unavailable_as_retryable(f"flag a deviation of task {task_id}"):
            await self._redis.hset(self.task_key(task_id), f"{agent}|flag|{measure.value}", "1")

    async def agents_of(self, task_id: str) -> list[str]:
        """The agents with figures in the task."""
        async with unavailable_as_retryable(f"read the figures of task {task_id}"):
            fields = await self._redis.hkeys(self.task_key(task_id))
        return sorted({str(f).rsplit("|", 1)[0] for f in fields if str(f).endswith("|calls")})

    async def fold(self, task_id: str, windows: dict[str, int], *, ttl_ms: int = TASK_TTL_MS) -> bool:
        """Learn from a completed task: its figures into the baseline of each agent in ``windows`` (name ->
        tasks); once, however often asked. False when there was nothing (left) to learn."""
        agents = sorted(windows)
        keys = [self.task_key(task_id), self.seen_key(task_id), *(self.agent_key(a) for a in agents)]
        args: list[str | int] = [ttl_ms]
        for agent in agents:
            args += [agent, windows[agent]]
        async with unavailable_as_retryable(f"learn from task {task_id}"):
            return bool(await self._fold(keys=keys, args=args))

    async def forget(self, task_id: str) -> None:
        """Drop a task that did not complete: nothing normal to learn from it."""
        async with unavailable_as_retryable(f"forget the figures of task {task_id}"):
            await self._redis.delete(self.task_key(task_id), self.seen_key(task_id))

    async def baseline(self, agent: str) -> Baseline:
        """The agent's baseline as it stands."""
        async with unavailable_as_retryable(f"read the baseline of agent {agent}"):
            tasks, *means = await self._redis.hmget(self.agent_key(agent), ["tasks", *(m.value for m in _MEASURES)])
        return Baseline(
            int(tasks or 0), tuple((m, float(v)) for m, v in zip(_MEASURES, means, strict=True) if v is not None)
        )
