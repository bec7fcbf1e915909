"""Ending a task: exactly one ``TaskResult`` per task, whoever ends it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from handrail.bus.publisher import Publisher
from handrail.errors import Rejected, TaskHalted
from handrail.messages import (
    BudgetSnapshot,
    HandoffEnvelope,
    StepCompleted,
    TaskResult,
    TaskStatus,
    derived_message_id,
    utcnow,
)
from handrail.metrics import TASK_COST_USD, TASK_STEPS, TASK_TOKENS, TASKS_FINISHED
from handrail.state import TaskStore

if TYPE_CHECKING:
    from handrail.audit import AuditLog
    from handrail.bus.delivery import Delivery


async def end_task(
    store: TaskStore,
    publisher: Publisher,
    results_topic: str,
    *,
    task_id: str,
    workflow: str,
    status: TaskStatus,
    result_id: str,
    budget: BudgetSnapshot | None = None,
    output: dict[str, Any] | None = None,
    reason: str | None = None,
    error_type: str | None = None,
    context_hash: str | None = None,
    audit: AuditLog | None = None,
    actor: str = "service",
) -> bool:
    """Record the task as ended and publish its result; return False when it had already ended.

    A redelivery of the message that ended the task (same ``result_id``) publishes
    the same result again with the same id, so a crash between the two steps
    cannot lose it - unless the result is known to be published already; any
    other late comer publishes nothing.
    """
    now = utcnow()
    finished = await store.finish(task_id, workflow, status.value, result_id, now.isoformat())
    if not finished.first and (finished.result_id != result_id or finished.published):
        return False
    budget = budget or BudgetSnapshot()
    result = TaskResult(
        message_id=result_id,
        task_id=task_id,
        workflow=workflow,
        status=status,
        output=output,
        reason=reason,
        error_type=error_type,
        steps=budget.steps_used,
        tokens=budget.tokens_used,
        cost_usd=round(budget.cost_usd_used, 6),
        context_hash=context_hash,
        finished_at=now,
    )
    # The audit record first: whoever sees the result can already trace it.
    if audit is not None:
        await audit.record(
            task_id,
            dedupe_key=result_id,
            actor=actor,
            action=f"task.{status.value}",
            reason=reason,
            workflow=workflow,
            input_hash=context_hash,
            details={"error_type": error_type, "steps": result.steps, "output": output},
            cost_usd=result.cost_usd,
            tokens=result.tokens,
        )
    await publisher.publish(results_topic, result, key=task_id)
    await store.mark_published(task_id)
    if finished.first:
        TASKS_FINISHED.labels(workflow, status.value).inc()
        TASK_STEPS.labels(workflow, status.value).observe(result.steps)
        TASK_TOKENS.labels(workflow).observe(result.tokens)
        TASK_COST_USD.labels(workflow).observe(result.cost_usd)
    return True


def fail_task_on_rejection(
    store: TaskStore, publisher: Publisher, results_topic: str, audit: AuditLog | None = None, actor: str = "service"
) -> Callable[[Rejected, Delivery, Any], Awaitable[None]]:
    """An ``on_rejected`` hook for handoff consumers: a rejected handoff ends its task.

    A handoff that cannot be verified or processed must never be processed on
    partial state, so its task ends with ``failed`` (``rejected`` for input
    errors), carrying what it had spent.
    """

    async def hook(error: Rejected, delivery: Delivery, payload: Any) -> None:
        if not isinstance(payload, (HandoffEnvelope, StepCompleted)):
            return  # undecodable: the dead letter is the record; the task's deadline ends it
        await end_task(
            store,
            publisher,
            results_topic,
            task_id=payload.task_id,
            workflow=payload.workflow,
            status=TaskStatus(error.task_status),
            result_id=derived_message_id(payload.message_id, "result"),
            budget=payload.budget,
            reason=error.reason,
            error_type=error.error_type,
            context_hash=payload.context_hash,
            audit=audit,
            actor=actor,
        )

    return hook


#: Parks a halted handoff for a person and returns True, or returns False to end the task ``halted``.
Escalate = Callable[[TaskHalted, HandoffEnvelope], Awaitable[bool]]


def halt_task(
    store: TaskStore,
    publisher: Publisher,
    results_topic: str,
    audit: AuditLog | None = None,
    actor: str = "service",
    *,
    escalate: Escalate | None = None,
) -> Callable[[TaskHalted, Delivery, Any], Awaitable[None]]:
    """An ``on_halted`` hook: the task ends ``halted`` with the reason, carrying what it had spent.

    With ``escalate`` (``Orchestrator.review_halt``), a halted handoff is first
    offered to the review queue: when the agent's autonomy asks for a person,
    the task is parked on ``reviews.requested`` instead of ending.
    """

    async def hook(halt: TaskHalted, delivery: Delivery, payload: Any) -> None:
        if not isinstance(payload, (HandoffEnvelope, StepCompleted)):
            return
        if escalate is not None and isinstance(payload, HandoffEnvelope) and await escalate(halt, payload):
            return
        await end_task(
            store,
            publisher,
            results_topic,
            task_id=payload.task_id,
            workflow=payload.workflow,
            status=TaskStatus.HALTED,
            result_id=derived_message_id(payload.message_id, "result"),
            budget=payload.budget,
            reason=halt.reason,
            error_type=halt.error_type,
            context_hash=payload.context_hash,
            audit=audit,
            actor=actor,
        )

    return hook
