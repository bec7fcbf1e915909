"""Reporting a step that did not complete: the worker says so on ``<prefix>steps``.

An agent may write only ``steps``, ``events``, ``audit`` and ``dlq`` (its Kafka
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
from handrail.messages import HandoffEnvelope, StepCompleted, derived_message_id, utcnow
from handrail.service import Runtime


class StepReporter:
    """The worker's ``on_halted`` and ``on_rejected`` hooks."""

    def __init__(self, runtime: Runtime, agent: str) -> None:
        self.rt = runtime
        self.agent = agent

    async def on_halted(self, halt: TaskHalted, delivery: Delivery, payload: Any) -> None:
        if isinstance(payload, HandoffEnvelope):
            await self._report(payload, "halted", halt.reason, halt.error_type)

    async def on_rejected(self, error: Rejected, delivery: Delivery, payload: Any) -> None:
        # Undecodable bytes or a task nobody opened: the dead letter is the whole record.
        if isinstance(payload, HandoffEnvelope) and not isinstance(error, UnknownTask):
            await self._report(payload, "failed", error.reason, error.error_type)

    async def _report(self, envelope: HandoffEnvelope, status: str, reason: str, error_type: str) -> None:
        record = await self.rt.store.get(envelope.task_id)
        head = record.get("head")
        if not head:
            return
        # A verified envelope is the task's head and its context travels on (a halted step may be
        # retried from it); an unverified one is not trusted with anything.
        trusted = head == envelope.context_hash and context_hash(envelope.context) == envelope.context_hash
        context = envelope.context if trusted else {}
        spent = await self.rt.budgets.usage(envelope.task_id)
        report = StepCompleted(
            message_id=derived_message_id(envelope.message_id, f"step-{status}"),
            status=status,
            reason=reason,
            error_type=error_type,
            task_id=envelope.task_id,
            workflow=envelope.workflow,
            step=envelope.step,
            step_index=envelope.step_index,
            attempt=envelope.attempt,
            agent=self.agent,
            goal=envelope.goal,
            deadline=envelope.deadline,
            output={},
            context=context,
            context_hash=context_hash(context),
            parent_hash=head,
            patch=[],
            budget=envelope.budget.model_copy(
                update={"steps_used": spent.steps, "tokens_used": spent.tokens, "cost_usd_used": spent.cost_usd}
            ),
            finished_at=utcnow(),
        )
        await self.rt.publisher.publish(self.rt.topics.steps, report, key=envelope.task_id)
