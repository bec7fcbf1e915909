"""Task records and the hash chain, with the checks that must be atomic done in Lua.

Per task (all keys share the ``{task_id}`` hash tag, so they live in one slot):

- ``<p>{id}:task``      hash: workflow, status, head (last committed context hash), submission, result_id,
                        published (the result is on the results topic); after ``handrail task resume``:
                        epoch (the run, 2 for the first resume) and supersedes (the previous run's result id)
- ``<p>{id}:accepted``  set of message ids accepted into the chain (a redelivery of one is resumed)
- ``<p>{id}:done``      set of ``consumer/message_id`` fully processed (a redelivery of one is skipped)
- ``<p>{id}:join:<step>`` hash: per branch of parallel step ``<step>`` that finished, its head, output and
                        budget snapshot (JSON), until all are in and the branches are joined

The branches of a parallel step each have a chain of their own from the fork: the task record's
``head:<step>.<branch>`` field, starting from the trunk's ``head`` (which stays at the fork point until
the join moves it to the hash of the branches' heads, ``join_hash``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from handrail.state.client import command, unavailable_as_retryable
from handrail.state.generation import GuardedScript

#: Keep a finished task's records this long, so late redeliveries are still recognised.
FINISHED_TTL_S = 7 * 24 * 3600

_OPEN = """
local existing = redis.call('HGET', KEYS[1], 'submission')
if existing then
  if existing == ARGV[1] then return {'resume', redis.call('HGET', KEYS[1], 'status')} end
  return {'duplicate', redis.call('HGET', KEYS[1], 'status')}
end
redis.call('HSET', KEYS[1], 'submission', ARGV[1], 'workflow', ARGV[2], 'status', ARGV[3],
           'head', ARGV[4], 'opened_at', ARGV[5])
return {'opened', ARGV[3]}
"""

#: ``accept``: check a hop's parent hash against the committed head and commit its hash; also run by
#: ``handrail.audit.acceptance`` together with the hop's audit record. KEYS: task, accepted, done.
ACCEPT_FN = """
local function accept(task, accepted, done, message_id, parent, context, done_id, step, via, via_parent)
  if redis.call('SISMEMBER', done, done_id) == 1 then return {'duplicate', ''} end
  local status = redis.call('HGET', task, 'status')
  if not status then return {'unknown_task', ''} end
  if redis.call('SISMEMBER', accepted, message_id) == 1 then return {'resumed', status} end
  if status ~= 'running' then return {'ended', status} end
  -- A branch of a parallel step (``<step>.<branch>``, not an evaluation hop) chains on its own head,
  -- which starts at the trunk's (the fork point).
  local field = 'head'
  local dot = string.find(step, '.', 1, true)
  if dot and string.sub(step, dot + 1) ~= 'evaluation' then field = 'head:' .. step end
  local head = redis.call('HGET', task, field) or redis.call('HGET', task, 'head')
  if head ~= parent then
    -- A rebuilt state cannot know that an agent took handoff ``via`` on (no agent records it): a step
    -- run on that handoff chains on from the head the handoff left from, and takes the handoff on too.
    if via == '' or head ~= via_parent or redis.call('HGET', task, 'rebuilt') ~= '1'
        or redis.call('SISMEMBER', accepted, via) == 1 then
      return {'parent_mismatch', head}
    end
    redis.call('SADD', accepted, via)
  end
  if field == 'head' then redis.call('HSET', task, 'head', context, 'step', step)
  else redis.call('HSET', task, field, context) end
  redis.call('SADD', accepted, message_id)
  return {'accepted', status}
end
"""

_ACCEPT = (
    ACCEPT_FN
    + """
return accept(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""
)

#: ``branch_done``: record branch ``ARGV[1]``'s entry (its head, output and budget, JSON) in the join of a
#: parallel step of ``ARGV[3]`` branches; once all of them are in, return every entry (branch, entry, ...).
#: Recording a branch again changes nothing. KEYS: task, join.
_BRANCH_DONE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return {'ended'} end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if redis.call('HLEN', KEYS[2]) < tonumber(ARGV[3]) then return {'waiting'} end
local found = redis.call('HGETALL', KEYS[2])
table.insert(found, 1, 'complete')
return found
"""

#: ``join``: move the trunk's head from the fork point ``ARGV[1]`` to ``ARGV[2]`` (the hash of the branches'
#: heads); joining again, or after the trunk moved on from there, changes nothing.
_JOIN = """
local head = redis.call('HGET', KEYS[1], 'head')
if head == ARGV[1] then
  redis.call('HSET', KEYS[1], 'head', ARGV[2], 'step', ARGV[3])
  return 'joined'
end
return head == ARGV[2] and 'joined' or 'moved'
"""

_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
local run = redis.call('HMGET', KEYS[1], 'epoch', 'supersedes')
if status and status ~= 'running' then
  local found = redis.call('HMGET', KEYS[1], 'result_id', 'published')
  return {'already', status, found[1] or '', found[2] or '', run[1] or '', run[2] or ''}
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'result_id', ARGV[2], 'workflow', ARGV[3], 'ended_at', ARGV[4])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return {'finished', ARGV[1], ARGV[2], '', run[1] or '', run[2] or ''}
"""

#: ``reopen``: start run ``ARGV[1]`` (the previous one + 1) of a task that ended failed or halted, with the
#: chain committed to ``ARGV[2]`` (its checkpoint's hash). Asking again for the same run changes nothing.
_REOPEN = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'unknown_task', ''} end
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '1')
local wanted = tonumber(ARGV[1])
if epoch == wanted then return {'already', status} end
if epoch > wanted then return {'stale', tostring(epoch)} end
if status ~= 'failed' and status ~= 'halted' then return {'not_resumable', status} end
if wanted ~= epoch + 1 then return {'stale', tostring(epoch)} end
local result = redis.call('HGET', KEYS[1], 'result_id') or ''
redis.call('HSET', KEYS[1], 'status', 'running', 'head', ARGV[2], 'epoch', ARGV[1], 'supersedes', result,
           'resumed_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'result_id', 'published', 'ended_at')
for i = 1, 3 do redis.call('PERSIST', KEYS[i]) end
return {'reopened', result}
"""


class Opening(StrEnum):
    """What opening a task found."""

    OPENED = "opened"  # a new task
    RESUME = "resume"  # this very submission opened it before (a redelivery): carry on
    DUPLICATE = "duplicate"  # another submission with the same task id came first


class Reopening(StrEnum):
    """What reopening an ended task for another run found."""

    REOPENED = "reopened"  # the task runs again from its checkpoint
    ALREADY = "already"  # this very run was started before (a second ``task resume``): nothing more to do
    STALE = "stale"  # the task is on a later run than the one asked for: look again
    NOT_RESUMABLE = "not_resumable"  # running, completed or rejected
    UNKNOWN_TASK = "unknown_task"


@dataclass(frozen=True)
class ReopenResult:
    """A ``Reopening`` and its detail: the superseded result's id, the task's status, or its current epoch."""

    outcome: Reopening
    detail: str


class Acceptance(StrEnum):
    """What a receiver may do with a handoff."""

    ACCEPTED = "accepted"  # parent matched; the chain now ends at this message's hash
    RESUMED = "resumed"  # accepted before but not finished (crash, redelivery): process again
    DUPLICATE = "duplicate"  # fully processed before: skip
    ENDED = "ended"  # the task already ended: skip
    PARENT_MISMATCH = "parent_mismatch"
    UNKNOWN_TASK = "unknown_task"


@dataclass(frozen=True)
class AcceptResult:
    """An ``Acceptance`` and its detail: the task status, or the committed head on a mismatch."""

    outcome: Acceptance
    detail: str


@dataclass(frozen=True)
class FinishResult:
    """Whether this caller ended the task (``first``), the id of the one result it has, and whether
    that result is known to be on the results topic already."""

    first: bool
    status: str
    result_id: str
    published: bool = False
    #: The task's run (1 unless it was resumed) and the result of the run before, which this one supersedes.
    epoch: int = 1
    supersedes: str | None = None


def accept_args(
    message_id: str, parent_hash: str, context_hash: str, consumer: str, step: str, via: Via | None = None
) -> list[str]:
    """``ACCEPT_FN``'s arguments after its keys (7 of them)."""
    via_id, via_parent = (via.message_id, via.parent_hash) if via is not None else ("", "")
    return [message_id, parent_hash, context_hash, f"{consumer}/{message_id}", step, via_id, via_parent]


@dataclass(frozen=True)
class Via:
    """The handoff a step was run on and the head that handoff left from (``StepCompleted.handoff``).

    A state rebuilt from Kafka cannot know that the agent took that handoff on (no agent writes the
    record), so it still has the handoff's parent as the head: ``accept`` chains the step on from there."""

    message_id: str
    parent_hash: str


class TaskStore:
    """Task records, the committed hash chain and redelivery dedupe, in Redis."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._open = GuardedScript(redis, _OPEN, prefix)
        self._accept = GuardedScript(redis, _ACCEPT, prefix)
        self._finish = GuardedScript(redis, _FINISH, prefix)
        self._reopen = GuardedScript(redis, _REOPEN, prefix)
        self._branch_done = GuardedScript(redis, _BRANCH_DONE, prefix)
        self._join = GuardedScript(redis, _JOIN, prefix)

    def keys(self, task_id: str) -> list[str]:
        """The task's record, accepted set and done set (``ACCEPT_FN``'s keys)."""
        base = f"{self._prefix}{{{task_id}}}"
        return [f"{base}:task", f"{base}:accepted", f"{base}:done"]

    async def open(
        self, task_id: str, workflow: str, submission: str, head: str, now: str, status: str = "running"
    ) -> Opening:
        """Open the task with ``head`` as its first committed hash; idempotent per ``submission``."""
        async with unavailable_as_retryable(f"open task {task_id}"):
            outcome, _ = await self._open(keys=self.keys(task_id), args=[submission, workflow, status, head, now])
        return Opening(outcome)

    async def accept(
        self,
        task_id: str,
        message_id: str,
        parent_hash: str,
        context_hash: str,
        consumer: str,
        step: str,
        via: Via | None = None,
    ) -> AcceptResult:
        """Check ``parent_hash`` against the committed head and, if it matches, commit ``context_hash``."""
        async with unavailable_as_retryable(f"verify the handoff of task {task_id}"):
            outcome, detail = await self._accept(
                keys=self.keys(task_id), args=accept_args(message_id, parent_hash, context_hash, consumer, step, via)
            )
        return AcceptResult(Acceptance(outcome), detail)

    def join_key(self, task_id: str, step: str) -> str:
        return f"{self._prefix}{{{task_id}}}:join:{step}"

    async def branch_done(
        self, task_id: str, step: str, branch: str, entry: str, branches: int
    ) -> dict[str, str] | None:
        """Record ``branch`` of parallel ``step`` as finished (``entry``: JSON); every branch's entry once all
        ``branches`` are in, else None (also when the task has ended)."""
        async with unavailable_as_retryable(f"record branch {step}.{branch} of task {task_id}"):
            found = await self._branch_done(
                keys=[self.keys(task_id)[0], self.join_key(task_id, step)],
                args=[branch, entry, branches, FINISHED_TTL_S],
            )
        if found[0] != "complete":
            return None
        pairs = found[1:]
        return {str(pairs[i]): str(pairs[i + 1]) for i in range(0, len(pairs), 2)}

    async def join(self, task_id: str, fork_head: str, joined_head: str, step: str) -> bool:
        """Move the trunk's head from the fork point to the joined head; False when it had moved on elsewhere."""
        async with unavailable_as_retryable(f"join the branches of task {task_id}"):
            outcome = await self._join(keys=[self.keys(task_id)[0]], args=[fork_head, joined_head, step])
        return str(outcome) == "joined"

    async def mark_done(self, task_id: str, consumer: str, message_id: str) -> None:
        """Record that ``consumer`` finished ``message_id`` and published all its outputs."""
        async with unavailable_as_retryable(f"record progress of task {task_id}"):
            await command(self._redis, "SADD", self.keys(task_id)[2], f"{consumer}/{message_id}")

    async def is_done(self, task_id: str, consumer: str, message_id: str) -> bool:
        """Whether ``consumer`` already finished ``message_id``."""
        async with unavailable_as_retryable(f"check progress of task {task_id}"):
            return bool(await self._redis.sismember(self.keys(task_id)[2], f"{consumer}/{message_id}"))

    async def finish(self, task_id: str, workflow: str, status: str, result_id: str, now: str) -> FinishResult:
        """End the task with ``status`` unless it already ended; either way say which result is its one."""
        async with unavailable_as_retryable(f"finish task {task_id}"):
            outcome, final_status, final_result, published, epoch, supersedes = await self._finish(
                keys=self.keys(task_id), args=[status, result_id, workflow, now, FINISHED_TTL_S]
            )
        return FinishResult(
            outcome == "finished", final_status, final_result, published == "1", int(epoch or 1), supersedes or None
        )

    async def reopen(self, task_id: str, epoch: int, head: str, now: str) -> ReopenResult:
        """Start run ``epoch`` of a task that ended ``failed`` or ``halted``, its chain committed to ``head``."""
        async with unavailable_as_retryable(f"reopen task {task_id}"):
            outcome, detail = await self._reopen(keys=self.keys(task_id), args=[epoch, head, now])
        return ReopenResult(Reopening(outcome), str(detail))

    async def mark_published(self, task_id: str) -> None:
        """Record that the task's result is on the results topic: a redelivery publishes it no more."""
        async with unavailable_as_retryable(f"record the result of task {task_id}"):
            await command(self._redis, "HSET", self.keys(task_id)[0], "published", "1")

    def restore(
        self,
        pipe: Pipeline,
        task_id: str,
        record: dict[str, str],
        accepted: set[str],
        joins: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Queue on ``pipe`` the writes that put back a task's record, accepted set and the joins of its
        parallel steps (``handrail.recovery``)."""
        keys = self.keys(task_id)
        pipe.delete(keys[0])
        fields: dict[FieldT, EncodableT] = {k: v for k, v in record.items()}
        pipe.hset(keys[0], mapping=fields)
        if accepted:
            pipe.sadd(keys[1], *sorted(accepted))
        for step, entries in (joins or {}).items():
            pipe.delete(self.join_key(task_id, step))
            if entries:
                joined: dict[FieldT, EncodableT] = {k: v for k, v in entries.items()}
                pipe.hset(self.join_key(task_id, step), mapping=joined)
        if record.get("status", "running") != "running":
            for key in keys:
                pipe.expire(key, FINISHED_TTL_S)

    async def get(self, task_id: str) -> dict[str, Any]:
        """The task's record (empty when unknown)."""
        async with unavailable_as_retryable(f"read task {task_id}"):
            record = await self._redis.hgetall(self.keys(task_id)[0])
        return {str(k): v for k, v in record.items()}
