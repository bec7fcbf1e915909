"""Deterministic orchestration: check a ``StepCompleted`` and decide what happens next."""

from __future__ import annotations

import logging
from typing import Any

import jsonschema

from handrail.bus import Delivery
from handrail.bus.results import end_task
from handrail.contracts import WorkflowSpec
from handrail.errors import StepFailed
from handrail.messages import HandoffEnvelope, StepCompleted, TaskStatus, derived_message_id
from handrail.service import Runtime

log = logging.getLogger(__name__)

SERVICE = "validator"


class OutputRejected(StepFailed):
    """The step's output does not satisfy the step's output schema."""

    error_type = "output_schema_violation"


class ValidatorHandlers:
    """The validator's handler, bound to its runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def on_step(self, step: StepCompleted, delivery: Delivery) -> None:
        """Check the output, then hand the next step on or publish the task's result."""
        workflow = self.rt.contracts.workflows.get(step.workflow)
        if workflow is None or step.step not in {s.name for s in workflow.steps}:
            raise StepFailed(f"workflow {step.workflow!r} has no step {step.step!r}", task_id=step.task_id)
        spec = workflow.step(step.step)
        errors = sorted(jsonschema.Draft202012Validator(spec.output_schema).iter_errors(step.output), key=str)
        if errors:
            detail = "; ".join(f"output/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:3])
            if len(errors) > 3:
                detail += f"; and {len(errors) - 3} more"
            raise OutputRejected(
                f"step {step.step!r} of task {step.task_id} produced an output that breaks its schema: {detail}",
                task_id=step.task_id,
            )
        following = workflow.next_step(step.step)
        if following is not None:
            envelope = HandoffEnvelope(
                message_id=derived_message_id(step.message_id, "handoff"),
                task_id=step.task_id,
                workflow=step.workflow,
                step=following.name,
                step_index=step.step_index + 1,
                sender=SERVICE,
                receiver=following.agent,
                deadline=step.deadline,
                goal=step.goal,
                context=step.context,
                context_hash=step.context_hash,
                # The validator does not change the context: the hash it records is the one it received.
                parent_hash=step.context_hash,
                budget=step.budget,
                idempotency_key=f"{step.task_id}/{following.name}/1",
            )
            await self.rt.publisher.publish(self.rt.topics.agent(following.agent), envelope, key=step.task_id)
            return
        await end_task(
            self.rt.store,
            self.rt.publisher,
            self.rt.topics.results,
            task_id=step.task_id,
            workflow=step.workflow,
            status=TaskStatus.COMPLETED,
            result_id=derived_message_id(step.message_id, "result"),
            budget=step.budget,
            output=self._with_escalation(workflow, step),
            context_hash=step.context_hash,
            audit=self.rt.audit,
            actor=f"service:{SERVICE}",
        )

    def _with_escalation(self, workflow: WorkflowSpec, step: StepCompleted) -> dict[str, Any]:
        """The final output, with the escalation a person would have to decide recorded in it."""
        scope = {"output": step.output, "context": step.context}
        for rule in workflow.escalations:
            if rule.when.holds(scope):
                log.info("task %s: escalation %r to %s recorded", step.task_id, rule.name, rule.role)
                return {**step.output, "escalation": {"rule": rule.name, "role": rule.role, "reason": rule.reason}}
        return step.output
