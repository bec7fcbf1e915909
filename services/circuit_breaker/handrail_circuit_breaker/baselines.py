"""Watching each agent against its behavioural baseline (``handrail.baselines``).

Every batch of decision events is counted into its task's running figures; a
completed task's result folds them into its agents' baselines. A deviation is
acted on once per (task, agent, measure), in an order that survives a crash at any
line: every act has an id derived from the deviation (the event, the audit record,
the halt and its control record), so doing it again after a crash changes nothing,
and the flag that says "done" is written last.

With ``on_deviation: escalate`` the act includes a halt of the task with the error
type ``behaviour_deviation``: the worker stops the task before its next call and
reports the step halted, and the validator applies the agent's autonomy: a person
reviews it (approval gates, exception-based), or it ends halted (audit-based).
Approving that review lifts the halt (``handrail_review.outcomes``).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge

from handrail.baselines import BEHAVIOUR_DEVIATION, Deviation, Figures, Measure, judge
from handrail.messages import (
    ControlRecord,
    DecisionEvent,
    DecisionEvents,
    TaskResult,
    TaskStatus,
    derived_message_id,
    utcnow,
)
from handrail.metrics import labels
from handrail.service import Runtime
from handrail.state.baselines import BaselineStore, Observation
from handrail_circuit_breaker.batching import Coalescer

log = logging.getLogger(__name__)

ACTOR = "service:circuit-breaker"

DEVIATIONS = Counter(
    "handrail_behaviour_deviations_total",
    "Running tasks found unlike their agent's baseline, by agent and measure.",
    ["agent", "measure"],
)
BASELINE = Gauge(
    "handrail_behaviour_baseline",
    "Each agent's baseline: the mean of each measure over its recent completed tasks.",
    ["agent", "measure"],
)
BASELINE_TASKS = Gauge(
    "handrail_behaviour_baseline_tasks", "Completed tasks each agent's baseline has learnt from.", ["agent"]
)


class BaselineWatcher:
    """Counts events into figures, learns from completed tasks, acts on deviations."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.store = BaselineStore(runtime.redis, runtime.settings.redis_prefix)
        # The figures of events handled at the same moment are counted in one round trip.
        self.observations = Coalescer(self.store.observe_all, "baseline-figures")

    async def on_events(self, batch: DecisionEvents) -> None:
        """Count a batch's calls into its task's figures, per agent; act on what is now past a bound."""
        by_agent: dict[str, list[DecisionEvent]] = {}
        for event in batch.events:
            if event.kind != "baseline" and event.agent in self.rt.contracts.agents:
                by_agent.setdefault(event.agent, []).append(event)
        for agent, events in by_agent.items():
            ran = [e for e in events if e.outcome in ("ok", "error")]
            delta = Figures(
                cost_usd=sum(e.cost_usd for e in events),
                tool_calls=sum(1 for e in ran if e.kind == "tool_call"),
                calls=len(ran),
                errors=sum(1 for e in ran if e.outcome == "error"),
            )
            observation = Observation(batch.task_id, agent, batch.message_id, delta, events[-1].step)
            (observed,) = await self.observations.submit([observation])
            policy = self.rt.contracts.agents[agent].baseline
            for deviation in judge(observed.figures, observed.baseline, policy):
                if deviation.measure not in observed.flagged:
                    await self._act(events[-1], deviation, escalate=policy.on_deviation == "escalate")
                    await self.store.flag(batch.task_id, agent, deviation.measure)

    async def on_result(self, result: TaskResult) -> None:
        """Learn from a completed task; forget the figures of one that ended otherwise."""
        if result.status != TaskStatus.COMPLETED:
            await self.store.forget(result.task_id)
            return
        agents = [a for a in await self.store.agents_of(result.task_id) if a in self.rt.contracts.agents]
        windows = {a: self.rt.contracts.agents[a].baseline.tasks for a in agents}
        if not await self.store.fold(result.task_id, windows):
            return
        for agent in agents:
            baseline = await self.store.baseline(agent)
            BASELINE_TASKS.labels(labels.agent(agent)).set(baseline.tasks)
            for measure in Measure:
                BASELINE.labels(labels.agent(agent), measure.value).set(baseline.mean(measure))

    async def _act(self, event: DecisionEvent, deviation: Deviation, *, escalate: bool) -> None:
        agent, task_id = event.agent, event.task_id
        reason = f"{BEHAVIOUR_DEVIATION}: {deviation.describe(agent)}"
        act_id = derived_message_id(task_id, f"baseline/{agent}/{deviation.measure.value}")
        DEVIATIONS.labels(labels.agent(agent), deviation.measure.value).inc()
        log.warning("task %s: %s", task_id, reason)
        found = DecisionEvent(
            message_id=act_id,
            task_id=task_id,
            workflow=event.workflow,
            step=event.step,
            agent=agent,
            kind="baseline",
            name=deviation.measure.value,
            outcome="deviation",
            error_type=BEHAVIOUR_DEVIATION,
            reason=reason,
            latency_ms=0.0,
            at=utcnow(),
        )
        record = DecisionEvents(message_id=derived_message_id(act_id, "events"), task_id=task_id, events=[found])
        await self.rt.publisher.publish(self.rt.topics.events, record, key=task_id)
        await self.rt.audit.record(
            task_id,
            dedupe_key=act_id,
            actor=ACTOR,
            action="baseline.deviation",
            reason=reason,
            workflow=event.workflow,
            details={
                "agent": agent,
                "measure": deviation.measure.value,
                "value": deviation.value,
                "baseline_mean": deviation.mean,
                "baseline_tasks": deviation.tasks,
                "escalated": escalate,
            },
        )
        if not escalate:
            return
        await self.rt.controls.halt("task", task_id, reason, ACTOR, BEHAVIOUR_DEVIATION)
        halt = ControlRecord(
            message_id=derived_message_id(act_id, "halt"),
            kind="halt",
            scope="task",
            name=task_id,
            state="halted",
            reason=reason,
            by=ACTOR,
            at=utcnow(),
            error_type=BEHAVIOUR_DEVIATION,
        )
        await self.rt.publisher.publish(self.rt.topics.control, halt, key=halt.key)
        await self.rt.audit.record(
            task_id,
            dedupe_key=halt.message_id,
            actor=ACTOR,
            action="halt.halted",
            reason=reason,
            workflow=event.workflow,
            details={"scope": "task", "name": task_id, "by": ACTOR},
        )
