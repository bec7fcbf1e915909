"""Turning a ``TaskSubmitted`` into the first handoff, or a rejection."""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from typing import Any

import jsonschema

from handrail.bus import Delivery
from handrail.bus.results import end_task
from handrail.errors import InputRejected, Rejected
from handrail.hashing import context_hash
from handrail.messages import HandoffEnvelope, TaskStatus, TaskSubmitted, derived_message_id, utcnow
from handrail.messages.envelope import BudgetSnapshot
from handrail.messages.tasks import TASK_ID_PATTERN
from handrail.service import Runtime
from handrail.state import Opening
from handrail.state.budgets import Caps
from handrail_router.settings import RouterSettings

log = logging.getLogger(__name__)

SERVICE = "router"


class RouterHandlers:
    """The router's handlers, bound to its runtime."""

    def __init__(self, runtime: Runtime, settings: RouterSettings) -> None:
        self.rt = runtime
        self.settings = settings

    async def on_task(self, task: TaskSubmitted, delivery: Delivery) -> None:
        """Validate ``task``, open it in Redis and publish its first envelope."""
        workflow = self._check(task, delivery)
        now = utcnow()
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
        await self.rt.budgets.open(task.task_id, caps, int(deadline.timestamp() * 1000))
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
            budget=BudgetSnapshot(max_steps=caps.steps, max_tokens=caps.tokens, max_cost_usd=caps.cost_usd),
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
            },
        )
        await self.rt.publisher.publish(self.rt.topics.agent(first.agent), envelope, key=task.task_id)

    def _check(self, task: TaskSubmitted, delivery: Delivery) -> Any:
        if len(delivery.value) > self.settings.max_task_bytes:
            raise InputRejected(
                f"task is {len(delivery.value)} bytes; the limit is {self.settings.max_task_bytes}",
                error_type="task_too_large",
                task_id=task.task_id,
            )
        workflow = self.rt.contracts.workflows.get(task.workflow)
        if workflow is None:
            raise InputRejected(
                f"unknown workflow {task.workflow!r}; known: {sorted(self.rt.contracts.workflows)}",
                error_type="unknown_workflow",
                task_id=task.task_id,
            )
        if not workflow.allows(task.submitted_by):
            raise InputRejected(
                f"submitter {task.submitted_by!r} may not run workflow {workflow.name!r}",
                error_type="submitter_not_allowed",
                task_id=task.task_id,
            )
        errors = sorted(jsonschema.Draft202012Validator(workflow.input_schema).iter_errors(task.input), key=str)
        if errors:
            detail = "; ".join(f"input/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])
            raise InputRejected(
                f"input does not match workflow {workflow.name!r}: {detail}",
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
    """The task id and workflow of a rejected submission, from the payload, its JSON, or the key."""
    if task is not None:
        return task.task_id, task.workflow
    task_id: Any = None
    workflow: Any = None
    try:
        raw = json.loads(delivery.value)
        if isinstance(raw, dict):
            task_id, workflow = raw.get("task_id"), raw.get("workflow")
    except ValueError:
        pass
    if not isinstance(task_id, str) or not re.match(TASK_ID_PATTERN, task_id):
        task_id = delivery.key if delivery.key and re.match(TASK_ID_PATTERN, delivery.key) else None
    return task_id, workflow if isinstance(workflow, str) else "unknown"
