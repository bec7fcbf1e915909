"""Reporting a step that did not complete: the worker says so on ``<prefix>steps``.

An agent may write only ``steps``, ``events`` and ``dlq`` (its Kafka
ACLs): it never ends a task itself. When a limit halts its step, or the
handoff it received cannot be processed, it publishes a ``StepCompleted`` with
``status`` ``halted`` or ``failed``, chained to the task's committed head; the
validator ends the task or, for a halt its autonomy sends to a person, parks it
for review.
"""

from __future__ import annotations

from typing import Any

from handrail.bus import Delivery
from handrail.errors import Rejected, TaskHalted, UnknownTask
from handrail.hashing import context_hash
from handrail.lifecycle import HandOff, spent_budget, step_report
from handrail.messages import HandoffEnvelope
from handrail.service import Runtime


class StepReporter:
    """The worker's ``on_halted`` and ``on_rejected`` hooks."""

    def __init__(self, runtime: Runtime, agent: str) -> None:
        self.rt = runtime
        self.agent = agent

    async def on_halted(self, halt: TaskHalted, delivery: Delivery, payload: Any) -> HandOff | None:
        if isinstance(payload, HandoffEnvelope):
            return await self._report(payload, "halted", halt.reason, halt.error_type)
        return None

    async def on_rejected(self, error: Rejected, delivery: Delivery, payload: Any) -> HandOff | None:
        # Undecodable bytes or a task nobody opened: the dead letter is the whole record.
        if isinstance(payload, HandoffEnvelope) and not isinstance(error, UnknownTask):
            return await self._report(payload, "failed", error.reason, error.error_type)
        return None

    async def _report(self, envelope: HandoffEnvelope, status: str, reason: str, error_type: str) -> HandOff | None:
        record = await self.rt.store.get(envelope.task_id)
        head = record.get("head")
        if not head:
            return None
        # A verified envelope is the task's head and its context travels on (a halted step may be
        # retried from it); an unverified one is not trusted with anything.
        trusted = head == envelope.context_hash and context_hash(envelope.context) == envelope.context_hash
        report = step_report(
            envelope,
            agent=self.agent,
            status=status,
            reason=reason,
            error_type=error_type,
            head=head,
            context=envelope.context if trusted else {},
            budget=spent_budget(envelope, await self.rt.budgets.usage(envelope.task_id)),
        )
        return HandOff(report)
