"""Turning a verified ``HandoffEnvelope`` into a ``StepCompleted``."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from handrail.bus import Delivery
from handrail.errors import HandoffError
from handrail.lifecycle import HandOff, context_after, spent_budget, step_awaiting_approval, step_completed
from handrail.messages import DecisionEvent, DecisionEvents, HandoffEnvelope, derived_message_id
from handrail.patch import diff
from handrail.service import Runtime
from handrail.state.admission import Admissions
from handrail_worker.guard import StepGuard
from handrail_worker.runner import Proposal, StepRunner
from handrail_worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class EventPublisher:
    """Sends one step's decision events on ``<prefix>events``, a record per batch (``DecisionEvents``).

    The events of calls that went well wait and go as one record: at the step's end,
    or with the next event once they have waited ``LINGER_S`` (a slow model's step
    does not hold its successes back from the breakers for long). An event that is not
    ``ok`` (an error, a stop, a halt) goes at once, with those before it, so the
    circuit-breaker counts a failure while the step still runs.
    Acknowledgements are not waited for one by one: ``flush`` sends what is left and
    waits for all of them, and the handler calls it before the step's offset can be
    committed, so no event can be lost.
    """

    #: How long the events of successful calls may wait for the next event before they are sent.
    LINGER_S = 0.5

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._batch: list[DecisionEvent] = []
        self._since = 0.0
        self._pending: list[asyncio.Future[Any]] = []

    async def emit(self, event: DecisionEvent) -> None:
        if not self._batch:
            self._since = time.monotonic()
        self._batch.append(event)
        if event.outcome != "ok" or time.monotonic() - self._since >= self.LINGER_S:
            await self._send()

    async def _send(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        first = batch[0]
        record = DecisionEvents(
            message_id=derived_message_id(first.message_id, f"events/{len(batch)}"), task_id=first.task_id, events=batch
        )
        sent = await self.rt.publisher.send(self.rt.topics.events, record, key=first.task_id)
        if sent is not None:
            self._pending.append(sent)

    async def flush(self) -> None:
        await self._send()
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
                recording=outcome.recording,
            )
            log.info("task %s: step %r waits for approval of %s", envelope.task_id, envelope.step, outcome.call.tool)
            return HandOff(waiting)
        context = context_after(envelope, outcome.output)
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
            context_seen=outcome.context_seen,
            recording=outcome.recording,
        )
        if self.settings.chaos_exit_after_publish:
            await self.rt.lifecycle.apply(HandOff(completed))
            log.critical("chaos: exiting after publishing %s, before its offset is committed", completed.message_id)
            os._exit(17)
        return HandOff(completed)
