"""Writing audit records: the chain lives in Redis, the records on Kafka.

A record is sealed in Python (sha256 over its canonical JSON, which carries its
``seq`` and the previous record's hash) and appended with a compare-and-set in
Lua: only if the task's chain head is still the record's ``prev_hash``. Two
services appending to one task at once cannot fork the chain; the loser
re-seals on the new head. The sealed record is kept under its message id (derived from the
decision's source message and action), so a redelivered message gets the very
same record back to publish: a failed publish never leaves a hole. Both the
head and the sealed records are rebuilt from the audit topic when Redis loses
them (``handrail.recovery``).

An append is one round trip when the writer knows the task's head: each log
remembers the heads it wrote, and a handoff carries its writer's in a header
(``AUDIT_HEAD_HEADER``) for the next service. A head is only a guess: the
compare-and-set checks it, and a wrong one costs the round trip that reading the
head would have.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Required, TypedDict, Unpack

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from handrail.audit.record import AuditRecord
from handrail.bus.publisher import Publisher
from handrail.errors import RetryableError
from handrail.hashing import GENESIS
from handrail.messages import derived_message_id, utcnow
from handrail.state.client import unavailable_as_retryable
from handrail.state.generation import GuardedScript

#: Keep chain state as long as a task's messages can be redelivered.
_TTL_S = 30 * 24 * 3600
#: Appends racing on one task; each retry means another writer appended meanwhile. A task has a
#: handful of writers at most; past this the message is redelivered later (nothing is lost).
_MAX_RACES = 64
#: The chain heads a log remembers (the tasks it wrote to last); the oldest are forgotten first.
_KNOWN_HEADS = 50_000

#: ``audit_append``: append a sealed record if the chain head is still the one it was sealed on; also run
#: by ``handrail.audit.acceptance`` together with a hop's acceptance. KEYS: chain head, sealed records.
#: Returns {'ok'}, {'exists', the record sealed before under this slot}, or {'moved', head, seq}.
APPEND_FN = """
local function audit_append(chain, records, slot, genesis, expected, new_head, seq, record, ttl)
  local existing = redis.call('HGET', records, slot)
  if existing then return {'exists', existing, ''} end
  local head = redis.call('HGET', chain, 'head') or genesis
  if head ~= expected then return {'moved', head, redis.call('HGET', chain, 'seq') or '0'} end
  redis.call('HSET', chain, 'head', new_head, 'seq', seq)
  redis.call('HSET', records, slot, record)
  redis.call('EXPIRE', chain, ttl)
  redis.call('EXPIRE', records, ttl)
  return {'ok', '', ''}
end
"""

_APPEND = (
    APPEND_FN
    + """
return audit_append(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""
)


class Decision(TypedDict, total=False):
    """One decision as the audit trail takes it (``AuditLog.record``, ``AuditLog.draft``): ``dedupe_key`` is
    the message the decision was made on (its record's id is derived from it and ``action``), ``actor``
    who made it; the rest is what it was about."""

    dedupe_key: Required[str]
    actor: Required[str]
    action: Required[str]
    reason: str | None
    workflow: str | None
    step: str | None
    input_hash: str | None
    output_hash: str | None
    details: dict[str, Any] | None
    cost_usd: float
    tokens: int


@dataclass
class Draft:
    """A record sealed on a guess of its task's chain head, not appended yet (``AuditLog.draft``)."""

    task_id: str
    keys: list[str]
    slot: str
    fields: dict[str, Any]
    head: str
    seq: int
    sealed: AuditRecord = field(init=False)

    def __post_init__(self) -> None:
        self.seal(self.head, self.seq)

    def seal(self, head: str, seq: int) -> None:
        """Seal the record as the one after ``head`` (the chain's ``seq``-th)."""
        self.head, self.seq = head, seq
        draft = AuditRecord(seq=seq + 1, prev_hash=head, record_hash=GENESIS, **self.fields)
        self.sealed = draft.model_copy(update={"record_hash": draft.computed_hash()})

    def append_args(self) -> list[Any]:
        """``APPEND_FN``'s arguments after its keys."""
        s = self.sealed
        return [self.slot, GENESIS, self.head, s.record_hash, s.seq, s.model_dump_json(), _TTL_S]


def chain_keys(prefix: str, task_id: str) -> list[str]:
    """The task's chain head (head, seq) and its sealed records (message id -> record)."""
    base = f"{prefix}{{{task_id}}}"
    return [f"{base}:audit", f"{base}:audit-records"]


def restore_chain(pipe: Pipeline, prefix: str, task_id: str, head: str, seq: int, records: dict[str, str]) -> None:
    """Queue on ``pipe`` the writes that put back a task's chain head and sealed records (``handrail.recovery``)."""
    keys = chain_keys(prefix, task_id)
    chain: dict[FieldT, EncodableT] = {"head": head, "seq": seq}
    pipe.hset(keys[0], mapping=chain)
    if records:
        sealed: dict[FieldT, EncodableT] = {k: v for k, v in records.items()}
        pipe.hset(keys[1], mapping=sealed)
    for key in keys:
        pipe.expire(key, _TTL_S)


class AuditLog:
    """Appends hash-chained audit records for tasks and publishes them on the audit topic.

    Built with ``enabled=False`` it records nothing but still passes chain heads on (``hint``,
    ``head_of``): so in a worker, whose agent never writes the audit trail, and in benchmarks.
    """

    def __init__(
        self, redis: aioredis.Redis, publisher: Publisher, topic: str, prefix: str = "hr:", *, enabled: bool = True
    ) -> None:
        self.enabled = enabled
        self._redis = redis
        self._publisher = publisher
        self._topic = topic
        self._prefix = prefix
        self._append = GuardedScript(redis, _APPEND, prefix)
        self._heads: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def head_of(self, task_id: str) -> str | None:
        """The task's chain head as this log last saw it, as ``AUDIT_HEAD_HEADER`` carries it."""
        known = self._heads.get(task_id)
        return f"{known[0]}:{known[1]}" if known is not None else None

    def hint(self, task_id: str, value: str | bytes | None) -> None:
        """Take a head a message carried (or GENESIS for a task just opened) as the next append's guess."""
        if not value:
            return
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        head, _, seq = text.partition(":")
        if len(head) == len(GENESIS) and seq.isdigit():
            self._remember(task_id, head, int(seq))

    def _remember(self, task_id: str, head: str, seq: int) -> None:
        self._heads[task_id] = (head, seq)
        self._heads.move_to_end(task_id)
        if len(self._heads) > _KNOWN_HEADS:
            self._heads.popitem(last=False)

    async def record(self, task_id: str, **decision: Unpack[Decision]) -> AuditRecord | None:
        """Append one decision to the task's chain and publish it; idempotent per ``dedupe_key`` and action.

        Returns None, and records nothing, only when the log was built disabled (benchmarks).
        """
        if not self.enabled:
            return None
        async with unavailable_as_retryable(f"append to the audit trail of task {task_id}"):
            if task_id not in self._heads:
                stored_head, stored_seq = await self._redis.hmget(chain_keys(self._prefix, task_id)[0], ["head", "seq"])
                self._remember(task_id, str(stored_head or GENESIS), int(stored_seq or 0))
        return await self.conclude(self.draft(task_id, **decision), None)

    def draft(self, task_id: str, **decision: Unpack[Decision]) -> Draft:
        """The record of one decision, sealed on the chain head this log knows (a guess the append checks;
        GENESIS when it knows none); ``conclude`` appends and publishes it."""
        # The record's id is derived from its decision: a redelivery finds the record sealed before.
        dedupe_key, action = decision["dedupe_key"], decision["action"]
        slot = derived_message_id(dedupe_key, f"audit/{action}")
        fields: dict[str, Any] = {
            "message_id": slot,
            "task_id": task_id,
            "source_id": dedupe_key,
            "actor": decision["actor"],
            "action": action,
            "reason": decision.get("reason"),
            "workflow": decision.get("workflow"),
            "step": decision.get("step"),
            "input_hash": decision.get("input_hash"),
            "output_hash": decision.get("output_hash"),
            "details": decision.get("details") or {},
            "cost_usd": round(decision.get("cost_usd", 0.0), 9),
            "tokens": decision.get("tokens", 0),
            "at": utcnow(),
        }
        head, seq = self._heads.get(task_id, (GENESIS, 0))
        return Draft(task_id, chain_keys(self._prefix, task_id), slot, fields, head, seq)

    async def conclude(self, draft: Draft, appended: list[str] | None) -> AuditRecord:
        """Append ``draft`` (unless ``appended`` holds what its append already answered), re-sealing on
        the head another writer moved the chain to; then publish the record that holds the slot."""
        task_id = draft.task_id
        async with unavailable_as_retryable(f"append to the audit trail of task {task_id}"):
            for _ in range(_MAX_RACES):
                if appended is None:
                    appended = await self._append(keys=draft.keys, args=draft.append_args())
                outcome, found, found_seq = appended
                if outcome == "ok":
                    sealed = draft.sealed
                    self._remember(task_id, sealed.record_hash, sealed.seq)
                    break
                if outcome == "exists":
                    sealed = AuditRecord.model_validate_json(found)
                    self._heads.pop(task_id, None)  # the chain may be further on than this record
                    break
                draft.seal(str(found), int(found_seq))
                appended = None
            else:
                raise RetryableError(f"audit chain of task {task_id} kept moving; gave up after {_MAX_RACES} tries")
        await self._publisher.publish(self._topic, sealed, key=task_id)
        return sealed
