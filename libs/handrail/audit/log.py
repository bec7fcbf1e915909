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
from typing import Any

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

_APPEND = """
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then return {'exists', existing, ''} end
local head = redis.call('HGET', KEYS[1], 'head') or ARGV[2]
if head ~= ARGV[3] then return {'moved', head, redis.call('HGET', KEYS[1], 'seq') or '0'} end
redis.call('HSET', KEYS[1], 'head', ARGV[4], 'seq', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return {'ok', '', ''}
"""


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
    """Appends hash-chained audit records for tasks and publishes them on the audit topic."""

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

    def _keys(self, task_id: str) -> list[str]:
        return chain_keys(self._prefix, task_id)

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

    async def record(
        self,
        task_id: str,
        *,
        dedupe_key: str,
        actor: str,
        action: str,
        reason: str | None = None,
        workflow: str | None = None,
        step: str | None = None,
        input_hash: str | None = None,
        output_hash: str | None = None,
        details: dict[str, Any] | None = None,
        cost_usd: float = 0.0,
        tokens: int = 0,
    ) -> AuditRecord | None:
        """Append one decision to the task's chain and publish it; idempotent per ``dedupe_key`` and action.

        Returns None, and records nothing, only when the log was built disabled (benchmarks).
        """
        if not self.enabled:
            return None
        keys = self._keys(task_id)
        # The record's id is derived from its decision: a redelivery finds the record sealed before.
        slot = derived_message_id(dedupe_key, f"audit/{action}")
        fields: dict[str, Any] = {
            "message_id": slot,
            "task_id": task_id,
            "source_id": dedupe_key,
            "actor": actor,
            "action": action,
            "reason": reason,
            "workflow": workflow,
            "step": step,
            "input_hash": input_hash,
            "output_hash": output_hash,
            "details": details or {},
            "cost_usd": round(cost_usd, 9),
            "tokens": tokens,
            "at": utcnow(),
        }
        async with unavailable_as_retryable(f"append to the audit trail of task {task_id}"):
            known = self._heads.get(task_id)
            if known is not None:
                head, seq = known  # a guess: if the chain moved on, the script says where it is now
            else:
                stored_head, stored_seq = await self._redis.hmget(keys[0], ["head", "seq"])
                head, seq = str(stored_head or GENESIS), int(stored_seq or 0)
            for _ in range(_MAX_RACES):
                draft = AuditRecord(seq=seq + 1, prev_hash=head, record_hash=GENESIS, **fields)
                sealed = draft.model_copy(update={"record_hash": draft.computed_hash()})
                outcome, found, found_seq = await self._append(
                    keys=keys,
                    args=[slot, GENESIS, head, sealed.record_hash, sealed.seq, sealed.model_dump_json(), _TTL_S],
                )
                if outcome == "ok":
                    self._remember(task_id, sealed.record_hash, sealed.seq)
                    break
                if outcome == "exists":
                    sealed = AuditRecord.model_validate_json(found)
                    self._heads.pop(task_id, None)  # the chain may be further on than this record
                    break
                head, seq = str(found), int(found_seq)
            else:
                raise RetryableError(f"audit chain of task {task_id} kept moving; gave up after {_MAX_RACES} tries")
        await self._publisher.publish(self._topic, sealed, key=task_id)
        return sealed
