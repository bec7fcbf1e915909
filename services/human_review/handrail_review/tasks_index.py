"""The task console's index in Redis: a projection of the ``audit`` and ``dlq`` topics (``tasks_projector``).

Kafka is the record: the index is rebuilt from the topics when Redis lost it, and a record applied
twice changes nothing (each task keeps the ids of the records applied to it). Keys share the hash
tag ``{console}``:

- ``<p>{console}:task:<id>``        hash: the summary (status, workflow, agents, opened / ended, steps,
                                    tokens, cost, last reason, trace id, dead letters)
- ``<p>{console}:timeline:<id>``    list: the latest ``timeline_max`` entries (JSON), oldest first
- ``<p>{console}:seen:<id>``        set: ids of the records applied
- ``<p>{console}:by:all``           zset: task id -> opened at (ms); and ``by:status:<s>``,
                                    ``by:workflow:<w>``, ``by:agent:<a>``, the same scores
- ``<p>{console}:dead:<id>``        string: a dead letter's summary (JSON; the original stays on the topic)
- ``<p>{console}:dead_letters``     zset: dead letter id -> dead-lettered at (ms)
- ``<p>{console}:offsets``          hash: ``topic:partition`` -> the next offset to read, and ``generation``

A finished task's keys expire like the rest of its state (``FINISHED_TTL_S``); a dead letter's with
the ``dlq`` topic's retention. An expired task's id is dropped from the sorted sets when a page
reads it.

Pages are read newest first from one sorted set (the narrowest filter given), from a cursor; the
other filters, and the text filter ``q`` (a task id prefix, or text in the last reason or the
workflow), are checked on the summaries read, at most ``max_examined`` of them per page. A page cut
by that bound still carries a cursor to go on from.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis

from handrail.messages import DeadLetter
from handrail.state.client import unavailable_as_retryable
from handrail.state.tasks import FINISHED_TTL_S
from handrail_review.timeline import Change

T = TypeVar("T")

#: Timeline entries kept per task: hundreds of hops is a runaway loop already, and the page shows the latest.
TIMELINE_MAX = 200
#: Kept as long as the ``dlq`` topic keeps the letters (``handrail.topics``: four weeks).
DEAD_LETTER_TTL_S = 28 * 24 * 3600
#: Summaries one page reads at most while filtering: bounds a request however rare the match.
MAX_EXAMINED = 5000
#: Ids read from a sorted set per round trip while paging.
_BATCH = 200

_APPLY = """
local base, id = ARGV[1], ARGV[3]
if redis.call('SADD', KEYS[3], ARGV[2]) == 0 then return 0 end
local score = redis.call('HGET', KEYS[1], 'opened_ms')
if not score then
  score = ARGV[4]
  redis.call('HSET', KEYS[1], 'task_id', id, 'opened_ms', score)
  redis.call('ZADD', KEYS[4], score, id)
end
local function move(field, value)
  local old = redis.call('HGET', KEYS[1], field)
  if old == value then return end
  if old then redis.call('ZREM', base .. 'by:' .. field .. ':' .. old, id) end
  redis.call('HSET', KEYS[1], field, value)
  redis.call('ZADD', base .. 'by:' .. field .. ':' .. value, score, id)
end
if ARGV[6] ~= '' then move('workflow', ARGV[6]) end
if ARGV[5] ~= '' then move('status', ARGV[5]) end
if ARGV[7] ~= '' then
  local agents = redis.call('HGET', KEYS[1], 'agents') or ''
  if not string.find(' ' .. agents .. ' ', ' ' .. ARGV[7] .. ' ', 1, true) then
    redis.call('HSET', KEYS[1], 'agents', agents == '' and ARGV[7] or (agents .. ' ' .. ARGV[7]))
    redis.call('ZADD', base .. 'by:agent:' .. ARGV[7], score, id)
  end
end
if ARGV[12] == '1' then
  redis.call('HSET', KEYS[1], 'tokens', ARGV[9], 'cost_usd', ARGV[10], 'steps', ARGV[11])
else
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[9])
  redis.call('HINCRBYFLOAT', KEYS[1], 'cost_usd', ARGV[10])
  redis.call('HINCRBY', KEYS[1], 'steps', ARGV[11])
end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[8]) end
if ARGV[15] ~= '' then redis.call('HSETNX', KEYS[1], 'trace_id', ARGV[15]) end
if ARGV[17] == '1' then redis.call('HINCRBY', KEYS[1], 'dead_letters', 1) end
redis.call('HSET', KEYS[1], 'updated_ms', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[13])
local length = redis.call('LLEN', KEYS[2])
if length > tonumber(ARGV[14]) then
  redis.call('LTRIM', KEYS[2], length - tonumber(ARGV[14]), -1)
  redis.call('HINCRBY', KEYS[1], 'timeline_dropped', length - tonumber(ARGV[14]))
end
if ARGV[16] == '1' then
  redis.call('HSET', KEYS[1], 'ended_ms', ARGV[4])
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[18]) end
elseif ARGV[16] == '-1' then
  redis.call('HDEL', KEYS[1], 'ended_ms')
  for i = 1, 3 do redis.call('PERSIST', KEYS[i]) end
end
return 1
"""

_DEAD_LETTER = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: ``<score>:<id>`` of its last entry read (the time in ms, the id whole); the next page
    starts after it. Plain text, so that every string the API documents as a cursor is one."""

    score: float
    member: str

    def encode(self) -> str:
        return f"{self.score:.0f}:{self.member}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor ``text`` spells; ``ValueError`` for anything else."""
        score, colon, member = text.partition(":")
        if not colon or not score.isascii() or not score.isdigit() or len(score) > 16:
            raise ValueError("not a cursor this API returned (`<opened at, ms>:<id>`)")
        return cls(float(int(score)), member)


@dataclass(frozen=True)
class TaskFilter:
    """Every filter given must hold. Times are milliseconds since the epoch, on when a task was opened."""

    status: str | None = None
    workflow: str | None = None
    agent: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    q: str | None = None

    def matches(self, summary: dict[str, str]) -> bool:
        q = (self.q or "").lower()
        return (
            (self.status is None or summary.get("status") == self.status)
            and (self.workflow is None or summary.get("workflow") == self.workflow)
            and (self.agent is None or self.agent in summary.get("agents", "").split())
            and (
                not q
                or summary.get("task_id", "").lower().startswith(q)
                or q in summary.get("reason", "").lower()
                or q in summary.get("workflow", "").lower()
            )
        )


@dataclass(frozen=True)
class DeadLetterFilter:
    error_type: str | None = None
    task_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    q: str | None = None

    def matches(self, letter: dict[str, Any]) -> bool:
        q = (self.q or "").lower()
        return (
            (self.error_type is None or letter.get("error_type") == self.error_type)
            and (self.task_id is None or letter.get("task_id") == self.task_id)
            and (
                not q
                or str(letter.get("task_id") or "").lower().startswith(q)
                or q in str(letter.get("reason", "")).lower()
            )
        )


@dataclass
class Page(Generic[T]):
    """One page, newest first; ``next_cursor`` None when there is no more; ``total`` when it was cheap."""

    items: list[T] = field(default_factory=list)
    next_cursor: str | None = None
    total: int | None = None
    examined: int = 0


class TaskIndex:
    """Writes (from the projector) and paged reads (from the console API) of the task index."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "hr:",
        *,
        timeline_max: int = TIMELINE_MAX,
        finished_ttl_s: int = FINISHED_TTL_S,
        max_examined: int = MAX_EXAMINED,
    ) -> None:
        self._redis = redis
        self._base = f"{prefix}{{console}}:"
        self._apply = redis.register_script(_APPLY)
        self._dead = redis.register_script(_DEAD_LETTER)
        self.timeline_max = timeline_max
        self.finished_ttl_s = finished_ttl_s
        self.max_examined = max_examined

    def _key(self, *parts: str) -> str:
        return self._base + ":".join(parts)

    async def apply(self, change: Change) -> bool:
        """Fold one record into its task; False when it was applied before (nothing changes)."""
        return (await self.apply_all([change]))[0]

    async def apply_all(self, changes: Sequence[Change]) -> list[bool]:
        """Fold records into their tasks in order, in one round trip; False for each applied before."""
        if not changes:
            return []
        what = f"index task {changes[0].task_id}" + (f" and {len(changes) - 1} more records" if changes[1:] else "")
        async with unavailable_as_retryable(what), self._redis.pipeline(transaction=False) as pipe:
            for change in changes:
                await self._apply(keys=self._apply_keys(change), args=self._apply_args(change), client=pipe)
            applied = await pipe.execute()
        return [bool(a) for a in applied]

    def _apply_keys(self, change: Change) -> list[str]:
        tid = change.task_id
        return [*(self._key(kind, tid) for kind in ("task", "timeline", "seen")), self._key("by", "all")]

    def _apply_args(self, change: Change) -> list[Any]:
        return [
            self._base,
            change.record_id,
            change.task_id,
            change.at_ms,
            change.status,
            change.workflow,
            change.agent,
            change.reason,
            change.tokens,
            repr(change.cost_usd),
            change.steps,
            "1" if change.totals else "0",
            change.entry,
            self.timeline_max,
            change.trace_id,
            change.ended,
            "1" if change.dead_letter else "0",
            self.finished_ttl_s,
        ]

    async def add_dead_letter(self, letter: DeadLetter) -> bool:
        """Keep a dead letter's summary for the list; False when it was kept before."""
        summary = letter.model_dump(mode="json", exclude={"original"}, exclude_none=True)
        at_ms = int(letter.dead_lettered_at.timestamp() * 1000)
        async with unavailable_as_retryable(f"index dead letter {letter.message_id}"):
            added = await self._dead(
                keys=[self._key("dead", letter.message_id), self._key("dead_letters")],
                args=[json.dumps(summary), at_ms, DEAD_LETTER_TTL_S, letter.message_id],
            )
        return bool(added)

    async def summary(self, task_id: str) -> dict[str, str] | None:
        async with unavailable_as_retryable(f"read task {task_id}"):
            raw = await self._redis.hgetall(self._key("task", task_id))
        return _text(raw) or None

    async def timeline(self, task_id: str) -> list[dict[str, Any]]:
        """The task's kept entries, oldest first."""
        async with unavailable_as_retryable(f"read the timeline of task {task_id}"):
            raw = await self._redis.lrange(self._key("timeline", task_id), 0, -1)
        return [json.loads(entry) for entry in raw]

    async def tasks(self, where: TaskFilter, cursor: Cursor | None, limit: int) -> Page[dict[str, str]]:
        """A page of task summaries, the latest opened first."""
        given = {"status": where.status, "workflow": where.workflow, "agent": where.agent}
        indexed = [(kind, value) for kind, value in given.items() if value]
        keys = [self._key("by", kind, value) for kind, value in indexed] or [self._key("by", "all")]
        sizes = [int(n) for n in await self._pipelined("zcard", keys)]
        key = keys[sizes.index(min(sizes))]  # the narrowest: fewest summaries read to fill a page

        async def load(ids: Sequence[str]) -> list[dict[str, str] | None]:
            rows = await self._pipelined("hgetall", [self._key("task", i) for i in ids])
            return [_text(row) or None for row in rows]

        page = await self._page(key, where.since_ms, where.until_ms, cursor, limit, load, where.matches)
        if len(indexed) <= 1 and not where.q:
            page.total = await self._count(key, where.since_ms, where.until_ms)
        return page

    async def dead_letters(self, where: DeadLetterFilter, cursor: Cursor | None, limit: int) -> Page[dict[str, Any]]:
        """A page of dead letters, the latest first."""
        key = self._key("dead_letters")

        async def load(ids: Sequence[str]) -> list[dict[str, Any] | None]:
            async with unavailable_as_retryable("read dead letters"):
                rows = await self._redis.mget([self._key("dead", i) for i in ids]) if ids else []
            return [json.loads(row) if row else None for row in rows]

        page = await self._page(key, where.since_ms, where.until_ms, cursor, limit, load, where.matches)
        if where == DeadLetterFilter(since_ms=where.since_ms, until_ms=where.until_ms):
            page.total = await self._count(key, where.since_ms, where.until_ms)
        return page

    async def checkpoint(self, offsets: dict[str, int], generation: str | None) -> None:
        """Remember where the projector is (``topic:partition`` -> next offset), under the state's generation."""
        if not offsets:
            return
        async with unavailable_as_retryable("store the console's offsets"):
            mapping: dict[str, str | int] = {**offsets, "generation": generation or ""}
            await self._redis.hset(self._key("offsets"), mapping=mapping)  # type: ignore[arg-type]

    async def resume_offsets(self, generation: str | None) -> dict[str, int]:
        """Where to go on reading, if the index was built under this very generation; else nothing (from the start)."""
        async with unavailable_as_retryable("read the console's offsets"):
            raw = _text(await self._redis.hgetall(self._key("offsets")))
        if raw.pop("generation", None) != (generation or ""):
            return {}
        return {k: int(v) for k, v in raw.items()}

    async def _page(
        self,
        key: str,
        since_ms: int | None,
        until_ms: int | None,
        cursor: Cursor | None,
        limit: int,
        load: Callable[[Sequence[str]], Awaitable[list[T | None]]],
        matches: Callable[[T], bool],
    ) -> Page[T]:
        high: float | str = cursor.score if cursor else (until_ms if until_ms is not None else "+inf")
        low: float | str = since_ms if since_ms is not None else "-inf"
        if cursor is not None and until_ms is not None:
            high = min(cursor.score, until_ms)
        page: Page[T] = Page()
        last: Cursor | None = None
        offset = 0
        while len(page.items) < limit and page.examined < self.max_examined:
            async with unavailable_as_retryable("page the task index"):
                found = await self._redis.zrevrangebyscore(key, high, low, start=offset, num=_BATCH, withscores=True)
            batch: list[tuple[Any, Any]] = [(entry[0], entry[1]) for entry in found]
            if not batch:
                return page  # the end: no cursor
            offset += len(batch)
            # Entries with the cursor's own score that sort at or after it were on the page before.
            fresh = [
                (str(m), float(s))
                for m, s in batch
                if cursor is None or float(s) != cursor.score or str(m) < cursor.member
            ]
            rows = await load([m for m, _ in fresh])
            gone = [m for (m, _), row in zip(fresh, rows, strict=True) if row is None]
            if gone:  # expired with their task: drop them from this index now
                async with unavailable_as_retryable("drop expired tasks from the index"):
                    await self._redis.zrem(key, *gone)
                offset -= len(gone)
            stopped = False
            for (member, score), row in zip(fresh, rows, strict=True):
                if len(page.items) >= limit or page.examined >= self.max_examined:
                    stopped = True
                    break
                page.examined += 1
                last = Cursor(score, member)
                if row is not None and matches(row):
                    page.items.append(row)
            if not stopped and len(batch) < _BATCH:
                return page  # read to the end of the set: no cursor
        page.next_cursor = last.encode() if last is not None else None
        return page

    async def _count(self, key: str, since_ms: int | None, until_ms: int | None) -> int:
        async with unavailable_as_retryable("count the task index"):
            return int(
                await self._redis.zcount(
                    key, since_ms if since_ms is not None else "-inf", until_ms if until_ms is not None else "+inf"
                )
            )

    async def _pipelined(self, command: str, keys: Sequence[str]) -> list[Any]:
        """``command`` on each of ``keys``, in one round trip."""
        if not keys:
            return []
        async with unavailable_as_retryable("read the task index"):
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                getattr(pipe, command)(key)
            return list(await pipe.execute())


def _text(raw: dict[Any, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()}
