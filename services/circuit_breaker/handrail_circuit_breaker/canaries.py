"""Judging canaries of prompt versions against live, and rolling back the ones that are worse.

A canary (``handrail.prompts.canary``) sends a share of an agent's tasks to a candidate version.
The model calls' decision events say which version each step of a task ran (``prompt``); a
task's end and its review requests count into its version's figures over the agent's window
(``handrail.state.canaries``). After each counted end the canary is judged by the agent's rule
(``agents.yaml`` ``canary``); a candidate worse than live is rolled back: every task's next step
runs the live version.

The rollback survives a crash at any line: its control record (``canary:agent:<agent>`` on the
control topic) and audit record have ids derived from the canary's, so doing it again changes
nothing, and the canary is ended last; the next task that ends judges it again. Ends handled side
by side roll a canary back once: each reads it again from Redis under a per-agent lock first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from prometheus_client import Counter

from handrail.messages import ControlRecord, DecisionEvents, ReviewRequested, TaskResult, derived_message_id, utcnow
from handrail.metrics import labels
from handrail.prompts import PromptLibrary, PromptStore, parse_ref
from handrail.prompts.canary import Arm, Canary, Cohort, Worse, judge
from handrail.service import Runtime
from handrail.state.canaries import CanaryCohorts

log = logging.getLogger(__name__)

ACTOR = "service:circuit-breaker"
#: How long the canaries read from Redis are taken as current: a new one is counted within a second.
FRESH_S = 1.0

CANARY_TASKS = Counter(
    "handrail_canary_tasks_total", "Tasks of an agent's canary that ended, by version arm.", ["agent", "arm"]
)
ROLLBACKS = Counter("handrail_canary_rollbacks_total", "Canaries rolled back for being worse than live.", ["agent"])


class CanaryWatcher:
    """Counts the tasks of running canaries per version and rolls back a candidate worse than live."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        settings = runtime.settings
        library = PromptLibrary(settings.config_dir / "prompts")
        self.prompts = PromptStore(library, runtime.redis, settings.redis_prefix)
        self.cohorts = CanaryCohorts(runtime.redis, settings.redis_prefix)
        self._refs = {name: agent.prompt for name, agent in runtime.contracts.agents.items()}
        self._running: dict[str, Canary] = {}
        self._read_at = -FRESH_S
        # Ends of one agent's tasks are handled side by side: one rollback at a time per agent.
        self._rolling: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def running(self) -> dict[str, Canary]:
        """The canaries that hold, by agent (read again at most every ``FRESH_S``)."""
        if time.monotonic() - self._read_at >= FRESH_S:
            self._running = await self.prompts.canaries(self._refs)
            self._read_at = time.monotonic()
        return self._running

    async def on_events(self, batch: DecisionEvents) -> None:
        """Mark the task with the version each of its canaried agents' model calls ran (and judge the canary
        when that counted an end read before these events)."""
        running = await self.running()
        if not running:
            return
        marked: set[tuple[str, Arm]] = set()
        for event in batch.events:
            canary = running.get(event.agent)
            if canary is None or event.kind != "model_call" or event.prompt is None:
                continue
            name, version = parse_ref(event.prompt)
            arm = canary.arm_of(version) if name == canary.prompt else None
            if arm is None or (event.agent, arm) in marked:
                continue
            marked.add((event.agent, arm))
            rule = self.rt.contracts.agents[event.agent].canary
            counted = await self.cohorts.mark(canary, batch.task_id, arm, rule.window_s)
            if counted is not None:
                await self._counted(canary, counted, batch.task_id, event.workflow)

    async def on_review(self, request: ReviewRequested) -> None:
        """A task went to a person: a review for the version it ran, in each canary it is part of."""
        for agent, canary in (await self.running()).items():
            if self._runs_in(agent, request.workflow):
                window = self.rt.contracts.agents[agent].canary.window_s
                await self.cohorts.count_review(canary, request.task_id, request.review_id, window)

    async def on_result(self, result: TaskResult) -> None:
        """A task ended: count it for the version it ran, then judge that canary."""
        for agent, canary in (await self.running()).items():
            if not self._runs_in(agent, result.workflow):
                continue
            rule = self.rt.contracts.agents[agent].canary
            arm = await self.cohorts.count_result(canary, result, rule.window_s)
            if arm is not None:
                await self._counted(canary, arm, result.task_id, result.workflow)

    def _runs_in(self, agent: str, workflow: str) -> bool:
        """Whether a step of ``workflow`` runs ``agent``: only those tasks can be a canary's."""
        spec = self.rt.contracts.workflows.get(workflow)
        return spec is not None and agent in spec.agents

    async def _counted(self, canary: Canary, arm: Arm, task_id: str, workflow: str) -> None:
        """A task's end counted into ``arm``: judge the canary by its agent's rule."""
        rule = self.rt.contracts.agents[canary.agent].canary
        CANARY_TASKS.labels(labels.agent(canary.agent), arm.value).inc()
        figures = await self.cohorts.figures(canary, rule.window_s)
        worse = judge(figures[Arm.CANDIDATE], figures[Arm.LIVE], rule)
        if not worse:
            return
        async with self._rolling[canary.agent]:
            # Another end judged while this one waited may have rolled it back already: read it again.
            declared = parse_ref(self._refs[canary.agent])[1]
            current = await self.prompts.canary(canary.prompt, canary.agent, declared=declared)
            if current is not None and current.id == canary.id:
                await self.roll_back(canary, worse, figures, task_id, workflow)

    async def roll_back(
        self, canary: Canary, worse: list[Worse], figures: dict[Arm, Cohort], task_id: str, workflow: str
    ) -> None:
        """Announce and audit the rollback (ids derived from the canary), then end the canary."""
        agent = canary.agent
        window = self.rt.contracts.agents[agent].canary.window_s
        reason = (
            f"canary of {canary.candidate_ref} for agent {agent} rolled back to {canary.live_ref}: "
            + "; ".join(w.describe() for w in worse)
            + f" over the last {window:g} s"
        )
        act_id = derived_message_id(canary.id, "canary/rolled_back")
        log.warning("%s", reason)
        record = ControlRecord(
            message_id=act_id,
            kind="canary",
            scope="agent",
            name=agent,
            state="rolled_back",
            reason=reason,
            by=ACTOR,
            at=utcnow(),
        )
        await self.rt.publisher.publish(self.rt.topics.control, record, key=record.key)
        await self.rt.audit.record(
            task_id,
            dedupe_key=act_id,
            actor=ACTOR,
            action="canary.rolled_back",
            reason=reason,
            workflow=workflow,
            details={
                "agent": agent,
                "canary_id": canary.id,
                "candidate": canary.candidate_ref,
                "live": canary.live_ref,
                "percent": canary.percent,
                "worse": [w.measure for w in worse],
                "figures": {arm.value: cohort.as_dict() for arm, cohort in figures.items()},
            },
        )
        if await self.prompts.end_canary(canary, "canary.rolled_back", by=ACTOR, reason=reason):
            ROLLBACKS.labels(labels.agent(agent)).inc()
        self._read_at = -FRESH_S
