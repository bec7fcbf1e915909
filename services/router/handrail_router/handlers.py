"""Turning a ``TaskSubmitted`` into the first handoff, or a rejection.

A task naming ``auto`` as its workflow is routed first (``handrail_router.routing``);
the checks (submitter, input schema) and the budget are then the chosen workflow's.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from handrail.bus import Delivery
from handrail.bus.identity import body_field, task_id_of
from handrail.contracts import WorkflowSpec, documents
from handrail.contracts.routing import AUTO
from handrail.errors import InputRejected, Rejected
from handrail.hashing import context_hash
from handrail.lifecycle import End, Open, Plan, TaskBudget, first_handoff
from handrail.messages import TaskStatus, TaskSubmitted, derived_message_id, utcnow
from handrail.messages.calls import BudgetSnapshot
from handrail.service import Runtime
from handrail.state.budgets import Amount, Caps
from handrail_router.decisions import DecisionStore
from handrail_router.routing import RouteDecision, RouteKind, TaskRouter
from handrail_router.settings import RouterSettings

log = logging.getLogger(__name__)

SERVICE = "router"
ACTOR = f"service:{SERVICE}"


#: The ``error_type`` of a task the classifier could not route with confidence, with review configured.
CLASSIFICATION_UNCERTAIN = "classification_uncertain"


class RouterHandlers:
    """The router's handlers, bound to its runtime and its task router."""

    def __init__(self, runtime: Runtime, settings: RouterSettings, router: TaskRouter) -> None:
        self.rt = runtime
        self.settings = settings
        self.router = router
        self.decisions = DecisionStore(runtime.redis, settings.redis_prefix)

    async def on_task(self, task: TaskSubmitted, delivery: Delivery) -> Plan:
        """Validate ``task`` and choose its workflow: open it with its first handoff (or end it, unroutable)."""
        self._check_size(task, delivery)
        received = utcnow()
        decision = await self._route(task, delivery)
        if decision is None:
            log.info("task %s was already submitted; this resubmission is ignored", task.task_id)
            return None
        if decision.workflow is None:
            return self._end_uncertain(task, delivery, decision)
        return self._open(task, delivery, self._check(task, decision.workflow, decision), decision, received)

    async def _route(self, task: TaskSubmitted, delivery: Delivery) -> RouteDecision | None:
        """The task's route; ``None`` when another submission under its id came first."""
        if task.workflow != AUTO:
            return await self.router.route(task)
        # A model may answer differently the second time: a redelivery takes the decision made the first time.
        kept = await self.decisions.get(task.task_id)
        if kept is None:
            if await self.rt.store.get(task.task_id):
                return None  # an earlier submission that named its workflow owns this id: no model call
            kept = await self.decisions.keep(task.task_id, delivery.ref, await self.router.route(task))
        return kept.decision if kept.submission == delivery.ref else None

    def _open(
        self, task: TaskSubmitted, delivery: Delivery, workflow: WorkflowSpec, decision: RouteDecision, now: datetime
    ) -> Open:
        first = workflow.steps[0]
        limits = workflow.limits
        deadline_s = min(task.deadline_s or self.settings.default_deadline_s, limits.deadline_s)
        deadline = now + timedelta(seconds=deadline_s)
        caps = Caps(tokens=limits.max_tokens, cost_usd=limits.max_cost_usd, steps=limits.max_steps)
        # The task's chain starts at the hash of its submission: the first hop's parent.
        genesis = context_hash(task.model_dump(mode="json"))
        envelope = first_handoff(
            task_id=task.task_id,
            submission=delivery.ref,
            workflow=workflow.name,
            step=first.name,
            agent=first.agents[0],  # the first step is never parallel (``WorkflowSpec``)
            sender=SERVICE,
            goal=workflow.goal_for(task.input),
            deadline=deadline,
            genesis=genesis,
            context={"input": task.input, "steps": {}},
            budget=BudgetSnapshot(
                tokens_used=decision.tokens,
                cost_usd_used=decision.cost_usd,
                max_steps=caps.steps,
                max_tokens=caps.tokens,
                max_cost_usd=caps.cost_usd,
            ),
        )
        return Open(
            task_id=task.task_id,
            workflow=workflow.name,
            submission=delivery.ref,
            genesis=genesis,
            actor=ACTOR,
            submitted_by=task.submitted_by,
            budget=TaskBudget(caps, deadline),
            # The classifier's call is part of what the task cost: charged to its fresh budget.
            spent=Amount(tokens=decision.tokens, cost_usd=decision.cost_usd),
            first=envelope,
            routing=decision.details(),
        )

    def _end_uncertain(self, task: TaskSubmitted, delivery: Delivery, decision: RouteDecision) -> Plan:
        """End a task the classifier could not route, with review configured: ``halted`` until review is wired."""
        proposed = f"; it proposed {decision.proposed!r}" if decision.proposed else ""
        return [
            Open(
                task_id=task.task_id,
                workflow=AUTO,
                submission=delivery.ref,
                genesis=context_hash(task.model_dump(mode="json")),
                actor=ACTOR,
                submitted_by=task.submitted_by,
                spent=Amount(tokens=decision.tokens, cost_usd=decision.cost_usd),
                routing=decision.details(),
            ),
            End(
                task_id=task.task_id,
                workflow=AUTO,
                status=TaskStatus.HALTED,
                result_id=derived_message_id(delivery.ref, "result"),
                actor=ACTOR,
                budget=BudgetSnapshot(tokens_used=decision.tokens, cost_usd_used=decision.cost_usd),
                reason=f"the router could not choose a workflow: {decision.reason}{proposed}; a person must route it",
                error_type=CLASSIFICATION_UNCERTAIN,
            ),
        ]

    def _check_size(self, task: TaskSubmitted, delivery: Delivery) -> None:
        if len(delivery.value) > self.settings.max_task_bytes:
            raise InputRejected(
                f"task is {len(delivery.value)} bytes; the limit is {self.settings.max_task_bytes}",
                error_type="task_too_large",
                task_id=task.task_id,
            )

    def _check(self, task: TaskSubmitted, name: str, decision: RouteDecision) -> WorkflowSpec:
        """The workflow ``name``, once the task may run it; routed tasks say how it was chosen."""
        how = "" if decision.kind == RouteKind.NAMED else f" ({decision.describe()})"
        workflow = self.rt.contracts.workflows.get(name)
        if workflow is None:
            raise InputRejected(
                f"unknown workflow {name!r}; known: {sorted(self.rt.contracts.workflows)}"
                f" (or {AUTO!r} to let the router choose)",
                error_type="unknown_workflow",
                task_id=task.task_id,
            )
        if not workflow.allows(task.submitted_by):
            raise InputRejected(
                f"submitter {task.submitted_by!r} may not run workflow {workflow.name!r}{how}",
                error_type="submitter_not_allowed",
                task_id=task.task_id,
            )
        errors = documents.problems(workflow.input_schema, task.input, "input")
        if errors:
            detail = documents.summary(errors, shown=10)
            raise InputRejected(
                f"input does not match workflow {workflow.name!r}{how}: {detail}",
                error_type="invalid_input",
                task_id=task.task_id,
            )
        return workflow

    async def on_rejected(self, error: Rejected, delivery: Delivery, task: TaskSubmitted | None) -> Plan:
        """End an identifiable rejected task with its one ``rejected`` result."""
        task_id, workflow = _identify(task, delivery)
        if task_id is None:
            return None  # nothing identifies a task: the dead letter is the whole record
        # Opened only to carry its result; an id an earlier submission owns stops here (it has its own).
        return [
            Open(
                task_id=task_id,
                workflow=workflow,
                submission=delivery.ref,
                genesis=context_hash({"rejected": delivery.ref}),
                actor=ACTOR,
                audited=False,
            ),
            End(
                task_id=task_id,
                workflow=workflow,
                status=TaskStatus.REJECTED,
                result_id=derived_message_id(delivery.ref, "result"),
                actor=ACTOR,
                reason=error.reason,
                error_type=error.error_type,
            ),
        ]


def _identify(task: TaskSubmitted | None, delivery: Delivery) -> tuple[str | None, str]:
    """The task id (``handrail.bus.identity``'s rule) and workflow of a rejected submission."""
    workflow = task.workflow if task is not None else body_field(delivery.value, "workflow")
    return task_id_of(task, delivery), workflow if isinstance(workflow, str) else "unknown"
