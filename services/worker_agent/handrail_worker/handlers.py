"""Turning a verified ``HandoffEnvelope`` into a ``StepCompleted``."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from handrail.bus import Delivery
from handrail.errors import HandoffError
from handrail.hashing import context_hash
from handrail.messages import DecisionEvent, HandoffEnvelope, StepCompleted, derived_message_id, utcnow
from handrail.patch import diff
from handrail.service import Runtime
from handrail_worker.guard import StepGuard
from handrail_worker.runner import StepRunner
from handrail_worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class EventPublisher:
    """Sends one step's decision events on ``<prefix>events`` without waiting for each acknowledgement.

    ``flush`` waits for all of them; the handler calls it before the step's
    offset can be committed, so no event can be lost.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._pending: list[asyncio.Future[Any]] = []

    async def emit(self, event: DecisionEvent) -> None:
        sent = await self.rt.publisher.send(self.rt.topics.events, event, key=event.task_id)
        if sent is not None:
            self._pending.append(sent)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)


class WorkerHandlers:
    """The worker's handler, bound to its agent and runtime."""

    def __init__(self, runtime: Runtime, settings: WorkerSettings, runner: StepRunner) -> None:
        self.rt = runtime
        self.settings = settings
        self.runner = runner
        self.agent = runner.agent

    async def on_envelope(self, envelope: HandoffEnvelope, delivery: Delivery) -> None:
        """Run the step and publish its output with the new context, its hash and the patch."""
        if envelope.receiver != self.agent.name:
            raise HandoffError(
                f"envelope for agent {envelope.receiver!r} arrived at agent {self.agent.name!r}",
                task_id=envelope.task_id,
            )
        events = EventPublisher(self.rt)
        guard = StepGuard(self.agent, envelope, self.rt.budgets, self.rt.controls, events)
        try:
            outcome = await self.runner.run(envelope, guard)
        finally:
            await events.flush()
        steps = {**envelope.context.get("steps", {}), envelope.step: outcome.output}
        context = {**envelope.context, "steps": steps}
        spent = await self.rt.budgets.usage(envelope.task_id)
        budget = envelope.budget.model_copy(
            update={"steps_used": spent.steps, "tokens_used": spent.tokens, "cost_usd_used": spent.cost_usd}
        )
        completed = StepCompleted(
            message_id=derived_message_id(envelope.message_id, "step-completed"),
            task_id=envelope.task_id,
            workflow=envelope.workflow,
            step=envelope.step,
            step_index=envelope.step_index,
            attempt=envelope.attempt,
            agent=self.agent.name,
            goal=envelope.goal,
            deadline=envelope.deadline,
            output=outcome.output,
            confidence=outcome.confidence,
            context=context,
            context_hash=context_hash(context),
            parent_hash=envelope.context_hash,
            patch=diff(envelope.context, context),
            decisions=outcome.decisions,
            usage=outcome.usage,
            budget=budget,
            finished_at=utcnow(),
        )
        await self.rt.publisher.publish(self.rt.topics.steps, completed, key=envelope.task_id)
        if self.settings.chaos_exit_after_publish:
            log.critical("chaos: exiting after publishing %s, before its offset is committed", completed.message_id)
            os._exit(17)
