"""Turning a ``TaskSubmitted`` into the first handoff, or a rejection.

A task naming ``auto`` as its workflow is routed first (``handrail_router.routing``);
the checks (submitter, input schema) and the budget are then the chosen workflow's.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import jsonschema

from handrail.bus import Delivery
from handrail.bus.identity import body_field, task_id_of
from handrail.bus.results import end_task
from handrail.contracts import WorkflowSpec
from handrail.contracts.routing import AUTO
from handrail.errors import InputRejected, Rejected
from handrail.hashing import context_hash
from handrail.messages import HandoffEnvelope, TaskStatus, TaskSubmitted, derived_message_id, utcnow
from handrail.messages.envelope import BudgetSnapshot
from handrail.service import Runtime
from handrail.state import Opening
from handrail.state.budgets import Amount, Caps
from handrail_router.decisions import DecisionStore
from handrail_router.routing import RouteDecision, RouteKind, TaskRouter
from handrail_router.settings import RouterSettings

log = logging.getLogger(__name__)

SERVICE = "router"


#: The ``error_type`` of a task the classifier could not route with confidence, with review configured.
CLASSIFICATION_UNCERTAIN = "classification_uncertain"


class RouterHandlers:
    """The router's handlers, bound to its runtime and its task router."""

    def __init__(self, runtime: Runtime, settings: RouterSettings, router: TaskRouter) -> None:
        self.rt = runtime
        self.settings = settings
        self.router = router
        self.decisions = DecisionStore(runtime.redis, settings.redis_prefix)

    async def on_task(self, task: TaskSubmitted, delivery: Delivery) -> None:
        """Validate ``task``, choose its workflow, open it in Redis and publish its first envelope."""
        self._check_size(task, delivery)
        received = utcnow()
        decision = await self._route(task, delivery)
        if decision is None:
            log.info("task %s was already submitted; this resubmission is ignored", task.task_id)
        elif decision.workflow is None:
            await self._end_uncertain(task, delivery, decision)
        else:
            await self._open(task, delivery, self._check(task, decision.workflow, decision), decision, received)

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

    async def _open(
        self, task: TaskSubmitted, delivery: Delivery, workflow: WorkflowSpec, decision: RouteDecision, now: datetime
    ) -> None:
        # The task's chain starts at the hash of its submission: the first hop's parent.
        genesis = context_hash(task.model_dump(mode="json"))
        opening = await self.rt.store.open(task.task_id, workflow.name, delivery.ref, genesis, now.isoformat())
        if opening == Opening.DUPLICATE:
            log.info("task %s was already submitted; this resubmission is ignored", task.task_id)
            return
        first = workflow.steps[0]
        limits = workflow.limits
        deadline_s = min(task.deadline_s or self.settings.default_deadline_s, limits.deadline_s)
        deadline = now + timedelta(seconds=deadline_s)
        caps = Caps(tokens=limits.max_tokens, cost_usd=limits.max_cost_usd, steps=limits.max_steps)
        if await self.rt.budgets.open(task.task_id, caps, int(deadline.timestamp() * 1000)):
            await self._charge_routing(task.task_id, delivery, decision, caps)
        context: dict[str, Any] = {"input": task.input, "steps": {}}
        envelope = HandoffEnvelope(
            # Derived from the submission's place in the log, so a redelivery republishes the same envelope.
            message_id=derived_message_id(delivery.ref, "handoff"),
            task_id=task.task_id,
            workflow=workflow.name,
            step=first.name,
            step_index=0,
            sender=SERVICE,
            receiver=first.agent,
            deadline=deadline,
            goal=workflow.goal_for(task.input),
            context=context,
            context_hash=context_hash(context),
            parent_hash=genesis,
            budget=BudgetSnapshot(
                tokens_used=decision.tokens,
                cost_usd_used=decision.cost_usd,
                max_steps=caps.steps,
                max_tokens=caps.tokens,
                max_cost_usd=caps.cost_usd,
            ),
            idempotency_key=f"{task.task_id}/{first.name}/1",
        )
        await self.rt.audit.record(
            task.task_id,
            dedupe_key=delivery.ref,
            actor=f"service:{SERVICE}",
            action="task.opened",
            reason=f"submitted by {task.submitted_by or 'an anonymous caller'}",
            workflow=workflow.name,
            step=first.name,
            input_hash=genesis,
            output_hash=envelope.context_hash,
            details={
                "handed_to": first.agent,
                "deadline": deadline.isoformat(),
                "budget": {"max_steps": caps.steps, "max_tokens": caps.tokens, "max_cost_usd": caps.cost_usd},
                "routing": decision.details(),
            },
            cost_usd=decision.cost_usd,
            tokens=decision.tokens,
        )
        await self.rt.publisher.publish(self.rt.topics.agent(first.agent), envelope, key=task.task_id)

    async def _charge_routing(self, task_id: str, delivery: Delivery, decision: RouteDecision, caps: Caps) -> None:
        """Charge the classifier's call to the task's fresh budget: routing is part of what the task cost.

        The call was made before the workflow (and so the caps) were known, so it is charged, not reserved:
        an empty reservation settled with what the model reported.
        """
        if not decision.tokens and not decision.cost_usd:
            return
        reservation_id = derived_message_id(delivery.ref, "routing")
        held = await self.rt.budgets.reserve(task_id, reservation_id, SERVICE, Amount(), caps, int(time.time() * 1000))
        if held.ok:
            spent = Amount(tokens=decision.tokens, cost_usd=decision.cost_usd)
            await self.rt.budgets.settle(task_id, reservation_id, spent, SERVICE)

    async def _end_uncertain(self, task: TaskSubmitted, delivery: Delivery, decision: RouteDecision) -> None:
        """End a task the classifier could not route, with review configured: ``halted`` until review is wired."""
        genesis = context_hash(task.model_dump(mode="json"))
        opening = await self.rt.store.open(task.task_id, AUTO, delivery.ref, genesis, utcnow().isoformat())
        if opening == Opening.DUPLICATE:
            return
        await self.rt.audit.record(
            task.task_id,
            dedupe_key=delivery.ref,
            actor=f"service:{SERVICE}",
            action="task.opened",
            reason=f"submitted by {task.submitted_by or 'an anonymous caller'}",
            workflow=AUTO,
            input_hash=genesis,
            details={"handed_to": None, "routing": decision.details()},
            cost_usd=decision.cost_usd,
            tokens=decision.tokens,
        )
        proposed = f"; it proposed {decision.proposed!r}" if decision.proposed else ""
        await end_task(
            self.rt.store,
            self.rt.publisher,
            self.rt.topics.results,
            task_id=task.task_id,
            workflow=AUTO,
            status=TaskStatus.HALTED,
            result_id=derived_message_id(delivery.ref, "result"),
            budget=BudgetSnapshot(tokens_used=decision.tokens, cost_usd_used=decision.cost_usd),
            reason=f"the router could not choose a workflow: {decision.reason}{proposed}; a person must route it",
            error_type=CLASSIFICATION_UNCERTAIN,
            audit=self.rt.audit,
            actor=f"service:{SERVICE}",
        )

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
        errors = sorted(jsonschema.Draft202012Validator(workflow.input_schema).iter_errors(task.input), key=str)
        if errors:
            detail = "; ".join(f"input/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])
            raise InputRejected(
                f"input does not match workflow {workflow.name!r}{how}: {detail}",
                error_type="invalid_input",
                task_id=task.task_id,
            )
        return workflow

    async def on_rejected(self, error: Rejected, delivery: Delivery, task: TaskSubmitted | None) -> None:
        """End an identifiable rejected task with its one ``rejected`` result."""
        task_id, workflow = _identify(task, delivery)
        if task_id is None:
            return  # nothing identifies a task: the dead letter is the whole record
        genesis = context_hash({"rejected": delivery.ref})
        opening = await self.rt.store.open(
            task_id, workflow, delivery.ref, genesis, utcnow().isoformat(), status="running"
        )
        if opening == Opening.DUPLICATE:
            return  # the id belongs to an earlier submission, which has (or will have) its own result
        await end_task(
            self.rt.store,
            self.rt.publisher,
            self.rt.topics.results,
            task_id=task_id,
            workflow=workflow,
            status=TaskStatus.REJECTED,
            result_id=derived_message_id(delivery.ref, "result"),
            reason=error.reason,
            error_type=error.error_type,
            audit=self.rt.audit,
            actor=f"service:{SERVICE}",
        )


def _identify(task: TaskSubmitted | None, delivery: Delivery) -> tuple[str | None, str]:
    """The task id (``handrail.bus.identity``'s rule) and workflow of a rejected submission."""
    workflow = task.workflow if task is not None else body_field(delivery.value, "workflow")
    return task_id_of(task, delivery), workflow if isinstance(workflow, str) else "unknown"
