"""Accepting a hop and auditing it in one round trip.

A receiver checks a handoff's parent hash against the task's committed head
(``TaskStore.accept``) and, when it takes the hop on, appends the hop's audit
record (``AuditLog``). Both live on the task's keys, so one script does both,
and the record is appended only when the hop is accepted (or resumed after a
crash). The record is sealed on the chain head the log knows or the handoff
carried: a wrong guess costs the one extra round trip that reading the head
would have cost (``AuditLog.conclude`` re-seals it on the head the script found).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from handrail.audit.log import APPEND_FN, AuditLog, Decision, Draft
from handrail.audit.record import AuditRecord
from handrail.state.client import unavailable_as_retryable
from handrail.state.generation import GuardedScript
from handrail.state.tasks import ACCEPT_FN, Acceptance, AcceptResult, TaskStore, Via, accept_args

_ACCEPT_AND_APPEND = (
    ACCEPT_FN
    + APPEND_FN
    + """
local accepted = accept(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if accepted[1] ~= 'accepted' and accepted[1] ~= 'resumed' then return {accepted[1], accepted[2], '', '', ''} end
local appended = audit_append(KEYS[4], KEYS[5], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14])
return {accepted[1], accepted[2], appended[1], appended[2], appended[3]}
"""
)

#: What taking a hop on means for the audit trail: the record is appended and published.
_TAKEN = (Acceptance.ACCEPTED, Acceptance.RESUMED)


@dataclass(frozen=True)
class HopAccepted:
    """The acceptance, and the hop's audit record when the hop was taken on."""

    result: AcceptResult
    record: AuditRecord | None


class HopAcceptance:
    """``TaskStore.accept`` and the accepted hop's audit record, in one script."""

    def __init__(self, redis: aioredis.Redis, prefix: str, store: TaskStore, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit
        self._script = GuardedScript(redis, _ACCEPT_AND_APPEND, prefix)

    async def accept(
        self,
        task_id: str,
        message_id: str,
        parent_hash: str,
        context_hash: str,
        consumer: str,
        step: str,
        record: Decision,
        via: Via | None = None,
    ) -> HopAccepted:
        """Accept the hop (``TaskStore.accept``); if taken on, append and publish ``record``
        (``AuditLog.draft``'s arguments)."""
        draft: Draft = self._audit.draft(task_id, **record)
        keys = [*self._store.keys(task_id), *draft.keys]
        args = [*accept_args(message_id, parent_hash, context_hash, consumer, step, via), *draft.append_args()]
        async with unavailable_as_retryable(f"verify the handoff of task {task_id}"):
            outcome, detail, *appended = await self._script(keys=keys, args=args)
        result = AcceptResult(Acceptance(outcome), detail)
        if result.outcome not in _TAKEN:
            return HopAccepted(result, None)
        return HopAccepted(result, await self._audit.conclude(draft, appended))
