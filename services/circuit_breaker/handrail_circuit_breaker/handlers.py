"""Counting call outcomes into breakers and behavioural baselines, and announcing trips and halts."""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter

from handrail.bus import Delivery
from handrail.messages import (
    ControlRecord,
    DecisionEvent,
    DecisionEvents,
    ReviewRequested,
    TaskResult,
    derived_message_id,
    utcnow,
)
from handrail.metrics import BREAKER_STATE, labels
from handrail.service import Runtime
from handrail.state.controls import BreakerPolicy
from handrail_circuit_breaker.baselines import BaselineWatcher
from handrail_circuit_breaker.batching import OutcomeBatcher
from handrail_circuit_breaker.canaries import CanaryWatcher

log = logging.getLogger(__name__)

SERVICE = "circuit-breaker"
_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}

TRIPS = Counter("handrail_breaker_transitions_total", "Breaker state changes.", ["scope", "state"])
HALTS = Counter("handrail_halts_total", "Tasks halted by a limit, by reason.", ["reason"])


class BreakerHandlers:
    """The circuit-breaker's handler, bound to its runtime and policy."""

    def __init__(self, runtime: Runtime, policy: BreakerPolicy) -> None:
        self.rt = runtime
        self.policy = policy
        self.outcomes = OutcomeBatcher(runtime.controls, policy)
        self.baselines = BaselineWatcher(runtime)
        self.canaries = CanaryWatcher(runtime)

    async def on_events(self, batch: DecisionEvents, delivery: Delivery) -> None:
        """Count the ok/error outcomes of a step's events on the agent's and the tool's or model's breakers,
        all in one batch; announce each breaker that changed, and each halt. The batch counts toward its
        agents' baselines first: that counts a batch once however often it is read, the breakers do not."""
        await self.baselines.on_events(batch)
        await self.canaries.on_events(batch)
        now_ms = int(time.time() * 1000)
        counted: list[tuple[DecisionEvent, str, str]] = []
        for event in batch.events:
            if event.outcome == "halted":
                await self.announce_halt(event)
            elif event.outcome in ("ok", "error"):  # rejected calls are the model's mistakes, short-circuited never ran
                counted.append((event, "agent", event.agent))
                counted.append((event, "tool" if event.kind == "tool_call" else "model", event.name))
        if not counted:
            return
        changes = await self.outcomes.record([(scope, name, e.outcome == "ok", now_ms) for e, scope, name in counted])
        for (event, scope, name), changed in zip(counted, changes, strict=True):
            if changed is None:
                continue
            TRIPS.labels(scope, changed.value).inc()
            BREAKER_STATE.labels(scope, labels.scoped(scope, name)).set(_STATE_VALUE[changed.value])
            log.warning("breaker %s:%s is now %s", scope, name, changed.value)
            await self.announce(
                ControlRecord(
                    message_id=derived_message_id(event.message_id, f"breaker/{scope}/{changed.value}"),
                    kind="breaker",
                    scope=scope,
                    name=name,
                    state=changed.value,
                    reason=f"last call {event.outcome} ({event.error_type or 'no error'}) in task {event.task_id}",
                    by=SERVICE,
                    at=utcnow(),
                ),
                task_id=event.task_id,
            )

    async def on_result(self, result: TaskResult, delivery: Delivery) -> None:
        """A task ended: its agents' baselines learn from it if it completed, and canaries count it."""
        await self.baselines.on_result(result)
        await self.canaries.on_result(result)

    async def on_review(self, request: ReviewRequested, delivery: Delivery) -> None:
        """A task went to a person: canaries count it for the version it ran."""
        await self.canaries.on_review(request)

    async def announce_halt(self, event: DecisionEvent) -> None:
        """A worker stopped a task before a call: the halt on the control topic and in the audit trail."""
        HALTS.labels(labels.error_type(event.error_type or "halted")).inc()
        await self.announce(
            ControlRecord(
                message_id=derived_message_id(event.message_id, "control"),
                kind="halt",
                scope="task",
                name=event.task_id,
                state="halted",
                reason=f"{event.error_type}: stopped before {event.kind} {event.name} (agent {event.agent})",
                by=f"worker:{event.agent}",
                at=utcnow(),
            ),
            task_id=event.task_id,
        )

    async def announce(self, record: ControlRecord, *, task_id: str) -> None:
        """The latest state on the compacted control topic, and the decision on the task's audit trail."""
        await self.rt.publisher.publish(self.rt.topics.control, record, key=record.key)
        await self.rt.audit.record(
            task_id,
            dedupe_key=record.message_id,
            actor=f"service:{SERVICE}",
            action=f"{record.kind}.{record.state}",
            reason=record.reason,
            details={"scope": record.scope, "name": record.name, "by": record.by},
        )
