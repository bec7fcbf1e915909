"""The review queue's index in Redis: a projection of ``reviews.requested`` and ``reviews.decided``.

Kafka is the record; this index is rebuilt from it on every start (see
``projector``) and holds what must be decided atomically between replicas:
whether a review is still pending, which distinct people approved it, and who
decided it. Keys share the hash tag ``{reviews}``:

- ``<p>{reviews}:item:<id>``         hash: the latest request (JSON), level, role, status, decision fields
- ``<p>{reviews}:votes:<id>:<level>``  hash: approver -> when, at that request level
- ``<p>{reviews}:seen:<id>``          set: ids of the decision records applied
- ``<p>{reviews}:records:<id>``       hash: message id -> ``ReviewDecided`` JSON (the trail, comments)
- ``<p>{reviews}:pending``            zset: id -> deadline (ms)
- ``<p>{reviews}:decided``            zset: id -> decided at (ms)
- ``<p>{reviews}:unfinished``         set: decided reviews whose effects (resume / end) are not all published
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from handrail.messages import BudgetTopUp, ReviewDecided, ReviewRequested
from handrail.state.client import unavailable_as_retryable
from handrail.state.generation import GuardedScript

#: Keep a decided review this long: the page lists recent decisions, the sweeper retries unfinished ones.
_DECIDED_TTL_S = 30 * 24 * 3600

_UPSERT = """
local cur = redis.call('HGET', KEYS[1], 'level')
if cur then
  if tonumber(cur) >= tonumber(ARGV[1]) then return 'kept' end
  if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 'kept' end
end
redis.call('HSET', KEYS[1], 'level', ARGV[1], 'request', ARGV[2], 'role', ARGV[3], 'approvals_required', ARGV[4],
  'deadline_ms', ARGV[5], 'task_id', ARGV[7], 'workflow', ARGV[8], 'trigger', ARGV[9], 'reason', ARGV[10],
  'status', 'pending')
redis.call('HSETNX', KEYS[1], 'requested_ms', ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[11])
return 'stored'
"""

_VOTE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'unknown', '', '', ''} end
local seen = redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1
if seen then return {'duplicate', status, cjson.encode(redis.call('HKEYS', KEYS[2])), ''} end
if status ~= 'pending' then return {'decided', status, redis.call('HGET', KEYS[1], 'decided_by') or '', ''} end
if redis.call('HGET', KEYS[1], 'level') ~= ARGV[2] then
  return {'stale', status, redis.call('HGET', KEYS[1], 'role'), ''}
end
-- A top-up changes what is approved as an edit does (a halt's grant of more budget).
local top_up_changed = ARGV[13] ~= '' and ARGV[13] ~= (redis.call('HGET', KEYS[1], 'top_up') or '')
if ARGV[4] == 'approve' and ARGV[5] == '' and ARGV[11] == '' and not top_up_changed
    and redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then
  return {'unchanged', status, cjson.encode(redis.call('HKEYS', KEYS[2])), ''}
end
redis.call('SADD', KEYS[3], ARGV[1])
local function decide(decision, approvers)
  redis.call('HSET', KEYS[1], 'status', decision, 'decided_by', ARGV[3], 'decided_role', ARGV[9],
    'decision_reason', ARGV[8], 'decided_ms', ARGV[7], 'approvers', approvers)
  redis.call('ZREM', KEYS[4], ARGV[10])
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[10])
  redis.call('SADD', KEYS[6], ARGV[10])
end
if ARGV[4] == 'reject' then
  decide('rejected', '[]')
  return {'rejected', 'rejected', '[]', ''}
end
local dropped = ''
if ARGV[5] ~= '' or top_up_changed then
  -- An edit changes what is approved: approvals given before it no longer count, and the item says whose.
  local before = {}
  for _, who in ipairs(redis.call('HKEYS', KEYS[2])) do
    if who ~= ARGV[3] then table.insert(before, who) end
  end
  redis.call('DEL', KEYS[2])
  redis.call('HINCRBY', KEYS[1], 'resets', 1)
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'edit', ARGV[5], 'edit_hash', ARGV[6], 'edited_by', ARGV[3]) end
  if top_up_changed then redis.call('HSET', KEYS[1], 'top_up', ARGV[13]) end
  if #before > 0 then
    dropped = cjson.encode(before)
    redis.call('HSET', KEYS[1], 'reset_by', ARGV[3], 'reset_ms', ARGV[7], 'reset_dropped', dropped,
      'reset_why', ARGV[5] ~= '' and 'edit' or 'top_up')
  end
end
if ARGV[11] ~= '' then
  for _, who in ipairs(cjson.decode(ARGV[12])) do redis.call('HSET', KEYS[2], who, ARGV[7]) end
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[7])
local approvers = redis.call('HKEYS', KEYS[2])
if ARGV[11] == 'approved' or #approvers >= tonumber(redis.call('HGET', KEYS[1], 'approvals_required')) then
  decide('approved', cjson.encode(approvers))
  return {'approved', 'approved', cjson.encode(approvers), dropped}
end
return {'pending', 'pending', cjson.encode(approvers), dropped}
"""


class VoteOutcome(StrEnum):
    """What recording an action found."""

    PENDING = "pending"  # counted; more approvals are needed
    APPROVED = "approved"  # this action decided it: approved
    REJECTED = "rejected"  # this action decided it: rejected
    DUPLICATE = "duplicate"  # this very action was recorded before: nothing changed
    UNCHANGED = "unchanged"  # this reviewer's approval already counts at this level: nothing changed
    DECIDED = "decided"  # the review was already decided by someone else
    STALE = "stale"  # the review was escalated to another level meanwhile
    UNKNOWN = "unknown"  # no such review (yet)


@dataclass(frozen=True)
class Vote:
    """An action to record: who, at which level, and (for edit-and-approve) the edit."""

    message_id: str
    level: int
    by: str
    action: str  # approve | reject
    now_ms: int
    reason: str = ""
    role: str = ""
    edit: list[dict[str, Any]] | None = None
    edit_hash: str = ""
    final: str = ""  # a replayed final record: its decision...
    approvers: tuple[str, ...] = ()  # ...and its approvers
    top_up: BudgetTopUp | None = None  # approving a halt: the budget granted with it


@dataclass(frozen=True)
class VoteResult:
    outcome: VoteOutcome
    status: str
    detail: str
    #: The approvals this action's edit dropped (JSON list; empty when it dropped none).
    dropped_json: str = ""

    @property
    def approvers(self) -> list[str]:
        return sorted(json.loads(self.detail)) if self.detail.startswith("[") else []

    @property
    def dropped(self) -> list[str]:
        return sorted(json.loads(self.dropped_json)) if self.dropped_json else []


@dataclass(frozen=True)
class Reset:
    """The last time an edit (or a different top-up) dropped approvals: who, when, whose no longer count, why."""

    by: str
    at_ms: int
    dropped: tuple[str, ...]
    why: str = "edit"  # edit | top_up


@dataclass(frozen=True)
class Item:
    """One review as indexed: its latest request and where it stands."""

    request: ReviewRequested
    status: str
    level: int
    role: str
    requested_ms: int
    deadline_ms: int
    fields: dict[str, str]
    votes: tuple[str, ...] = ()

    @property
    def review_id(self) -> str:
        return self.request.review_id

    @property
    def approvers(self) -> list[str]:
        """Who approved: so far at the current level while pending, else those the decision counted."""
        if self.status == "pending":
            return sorted(self.votes)
        return sorted(json.loads(self.fields.get("approvers") or "[]"))

    @property
    def edit(self) -> list[dict[str, Any]] | None:
        raw = self.fields.get("edit")
        return list(json.loads(raw)) if raw else None

    @property
    def top_up(self) -> BudgetTopUp | None:
        """The budget approving this halt grants (the latest top-up approved with), if any."""
        raw = self.fields.get("top_up")
        return BudgetTopUp.model_validate_json(raw) if raw else None

    @property
    def finished(self) -> bool:
        return self.fields.get("finalized") == "1"

    @property
    def resets(self) -> int:
        """How many edits so far started the approvals again (part of a vote's id: a vote after one counts)."""
        return int(self.fields.get("resets") or 0)

    @property
    def reset(self) -> Reset | None:
        dropped = self.fields.get("reset_dropped")
        if not dropped:
            return None
        return Reset(
            self.fields.get("reset_by", ""),
            int(self.fields.get("reset_ms") or 0),
            tuple(json.loads(dropped)),
            self.fields.get("reset_why") or "edit",
        )


class ReviewIndex:
    """Reads and atomic updates of the review index."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self._redis = redis
        self._base = f"{prefix}{{reviews}}"
        # Guarded: a vote on an index Redis forgot would count twice; the projector rebuilds it first.
        self._upsert = GuardedScript(redis, _UPSERT, prefix)
        self._vote = GuardedScript(redis, _VOTE, prefix)

    def _key(self, kind: str, review_id: str = "", level: int | None = None) -> str:
        key = f"{self._base}:{kind}"
        if review_id:
            key += f":{review_id}"
        if level is not None:
            key += f":{level}"
        return key

    async def upsert(self, request: ReviewRequested) -> bool:
        """Index ``request`` unless a request of the same or a higher level is there; True when stored."""
        rid = request.review_id
        async with unavailable_as_retryable(f"index review {rid}"):
            outcome = await self._upsert(
                keys=[self._key("item", rid), self._key("pending")],
                args=[
                    request.level,
                    request.model_dump_json(exclude_none=True),
                    request.role,
                    request.approvals_required,
                    int(request.deadline.timestamp() * 1000),
                    int(request.requested_at.timestamp() * 1000),
                    request.task_id,
                    request.workflow,
                    request.trigger.value,
                    request.reason,
                    rid,
                ],
            )
        return bool(outcome == "stored")

    async def vote(self, review_id: str, vote: Vote) -> VoteResult:
        """Record an approval or a rejection atomically; distinct approvers are counted once."""
        keys = [
            self._key("item", review_id),
            self._key("votes", review_id, vote.level),
            self._key("seen", review_id),
            self._key("pending"),
            self._key("decided"),
            self._key("unfinished"),
        ]
        args: list[str | int] = [
            vote.message_id,
            vote.level,
            vote.by,
            vote.action,
            json.dumps(vote.edit) if vote.edit is not None else "",
            vote.edit_hash,
            vote.now_ms,
            vote.reason,
            vote.role,
            review_id,
            vote.final,
            json.dumps(list(vote.approvers)),
            vote.top_up.model_dump_json() if vote.top_up is not None and not vote.top_up.empty else "",
        ]
        async with unavailable_as_retryable(f"record a decision on review {review_id}"):
            outcome, status, detail, dropped = await self._vote(keys=keys, args=args)
        return VoteResult(VoteOutcome(outcome), str(status), str(detail), str(dropped))

    async def add_record(self, record: ReviewDecided) -> bool:
        """Keep a decision record (the trail, comments); False when it was kept before."""
        async with unavailable_as_retryable(f"keep a record of review {record.review_id}"):
            return bool(
                await self._redis.hsetnx(self._key("records", record.review_id), record.message_id, record.to_bytes())
            )

    async def records(self, review_id: str) -> list[ReviewDecided]:
        async with unavailable_as_retryable(f"read the records of review {review_id}"):
            raw = await self._redis.hvals(self._key("records", review_id))
        return sorted((ReviewDecided.model_validate_json(r) for r in raw), key=lambda r: r.decided_at)

    async def get(self, review_id: str) -> Item | None:
        found = await self._load([review_id])
        return found[0] if found else None

    async def pending(self) -> list[Item]:
        """Every pending review, soonest deadline first."""
        return await self._items("pending", 0, -1)

    async def oldest_pending_ms(self) -> int | None:
        """When the longest-waiting pending review was requested (ms), or None when none is pending."""
        async with unavailable_as_retryable("find the oldest pending review"):
            ids = await self._redis.zrange(self._key("pending"), 0, -1)
            if not ids:
                return None
            pipe = self._redis.pipeline(transaction=False)
            for rid in ids:
                pipe.hget(self._key("item", str(rid)), "requested_ms")
            found = [int(ms) for ms in await pipe.execute() if ms]
        return min(found) if found else None

    async def count_pending(self) -> int:
        async with unavailable_as_retryable("count pending reviews"):
            return int(await self._redis.zcard(self._key("pending")))

    async def recently_decided(self, limit: int = 50) -> list[Item]:
        """The ``limit`` latest decided reviews, the latest decision first."""
        return (await self._decided_page(0, limit))[0]

    async def decided_history(self, page_size: int, max_scanned: int) -> AsyncGenerator[list[Item], None]:
        """Decided reviews, the latest decision first, a page at a time; at most the ``max_scanned`` latest."""
        offset = 0
        while offset < max_scanned:
            items, scanned = await self._decided_page(offset, min(page_size, max_scanned - offset))
            if not scanned:
                return
            yield items
            offset += scanned

    async def _decided_page(self, offset: int, limit: int) -> tuple[list[Item], int]:
        """A page of the decided reviews still kept, and how many ids it read (expired ones load as nothing)."""
        if limit < 1:
            return [], 0  # ZREVRANGE 0 -1 would be every one of them
        async with unavailable_as_retryable("list decided reviews"):
            ids = await self._redis.zrevrange(self._key("decided"), offset, offset + limit - 1)
        return await self._load(ids), len(ids)

    async def overdue(self, now_ms: int) -> list[str]:
        """Ids of pending reviews past their deadline."""
        async with unavailable_as_retryable("find overdue reviews"):
            ids = await self._redis.zrangebyscore(self._key("pending"), "-inf", now_ms)
        return [str(i) for i in ids]

    async def unfinished(self) -> list[str]:
        """Ids of decided reviews whose effects were not all published (a crash in between)."""
        async with unavailable_as_retryable("find unfinished reviews"):
            return [str(i) for i in await self._redis.smembers(self._key("unfinished"))]

    async def mark_finished(self, review_id: str, outcome: str, *, known: bool = True) -> None:
        """The decision's record and effects are all published.

        ``known`` False is a replica that read the final record but did not carry the review out
        itself: it never overwrites the outcome the carrying replica writes, whichever comes first.
        """
        async with unavailable_as_retryable(f"finish review {review_id}"):
            pipe = self._redis.pipeline(transaction=True)
            key = self._key("item", review_id)
            if known:
                pipe.hset(key, mapping={"finalized": "1", "outcome": outcome})
            else:
                pipe.hset(key, "finalized", "1")
                pipe.hsetnx(key, "outcome", outcome)
            pipe.srem(self._key("unfinished"), review_id)
            for kind in ("item", "seen", "records"):
                pipe.expire(self._key(kind, review_id), _DECIDED_TTL_S)
            await pipe.execute()

    async def _items(self, kind: str, start: int, stop: int) -> list[Item]:
        async with unavailable_as_retryable("list reviews"):
            ids = await self._redis.zrange(self._key(kind), start, stop)
        return await self._load(ids)

    async def _load(self, ids: list[Any]) -> list[Item]:
        async with unavailable_as_retryable("read reviews"):
            pipe = self._redis.pipeline(transaction=False)
            for rid in ids:
                pipe.hgetall(self._key("item", str(rid)))
            items = [item for row in await pipe.execute() if (item := _item(row)) is not None]
            pipe = self._redis.pipeline(transaction=False)
            for item in items:
                pipe.hkeys(self._key("votes", item.review_id, item.level))
            votes = await pipe.execute()
        return [replace(item, votes=tuple(map(str, v))) for item, v in zip(items, votes, strict=True)]


def _item(raw: dict[Any, Any]) -> Item | None:
    fields = {str(k): str(v) for k, v in raw.items()}
    if "request" not in fields:
        return None
    return Item(
        request=ReviewRequested.model_validate_json(fields["request"]),
        status=fields["status"],
        level=int(fields["level"]),
        role=fields["role"],
        requested_ms=int(fields.get("requested_ms", "0")),
        deadline_ms=int(fields["deadline_ms"]),
        fields=fields,
    )
