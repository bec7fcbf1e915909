"""Turning a verified ``HandoffEnvelope`` into a ``StepCompleted``."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from handrail.bus import Delivery
from handrail.errors import HandoffError
from handrail.lifecycle import HandOff, spent_budget, step_awaiting_approval, step_completed
from handrail.messages import DecisionEvent, HandoffEnvelope
from handrail.patch import diff
from handrail.service import Runtime
from handrail.state.admission import Admissions
from handrail_worker.guard import StepGuard
from handrail_worker.runner import Proposal, StepRunner
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
        self.admissions = Admissions(runtime.redis, runtime.budgets, runtime.controls, settings.redis_prefix)

    async def on_envelope(self, envelope: HandoffEnvelope, delivery: Delivery) -> HandOff:
        """Run the step; hand its output on to the validator with the new context, its hash and the patch.

        A step that stopped before a call a person must approve goes to the validator too, with the proposal.
        """
        if envelope.receiver != self.agent.name:
            raise HandoffError(
                f"envelope for agent {envelope.receiver!r} arrived at agent {self.agent.name!r}",
                task_id=envelope.task_id,
            )
        events = EventPublisher(self.rt)
        guard = StepGuard(self.agent, envelope, self.rt.budgets, self.admissions, events)
        try:
            outcome = await self.runner.run(envelope, guard)
            spent = await guard.spent()
        finally:
            await guard.settle_pending()  # a step that ended on a halt or an error still pays for its calls
            await events.flush()
        if isinstance(outcome, Proposal):
            waiting = step_awaiting_approval(
                envelope,
                agent=self.agent.name,
                proposal=outcome.call,
                progress=outcome.progress,
                budget=spent_budget(envelope, spent),
            )
            log.info("task %s: step %r waits for approval of %s", envelope.task_id, envelope.step, outcome.call.tool)
            return HandOff(waiting)
        steps = {**envelope.context.get("steps", {}), envelope.step: outcome.output}
        context = {**envelope.context, "steps": steps}
        completed = step_completed(
            envelope,
            agent=self.agent.name,
            output=outcome.output,
            context=context,
            patch=diff(envelope.context, context),
            budget=spent_budget(envelope, spent),
            confidence=outcome.confidence,
            decisions=outcome.decisions,
            usage=outcome.usage,
        )
        if self.settings.chaos_exit_after_publish:
            await self.rt.lifecycle.apply(HandOff(completed))
            log.critical("chaos: exiting after publishing %s, before its offset is committed", completed.message_id)
            os._exit(17)
        return HandOff(completed)
