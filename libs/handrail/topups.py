"""How much more budget one task may still be given: its workflow's ``max_top_up``, all its grants together.

The one bound for both ways a task gets more: a reviewer approving its halt (human review) and an
operator resuming it (``handrail task resume --top-up``). What was granted is read from the task's
budget (``BudgetStore.granted``), which a rebuild from Kafka puts back from the ``budget.granted``
records.
"""

from __future__ import annotations

from handrail.contracts import WorkflowSpec
from handrail.messages import BudgetTopUp
from handrail.state.budgets import BudgetStore


async def granted_so_far(budgets: BudgetStore, task_id: str) -> BudgetTopUp:
    """Everything granted to the task so far, as one top-up."""
    so_far = await budgets.granted(task_id)
    return BudgetTopUp(
        tokens=so_far.extra.tokens,
        cost_usd=so_far.extra.cost_usd,
        steps=so_far.extra.steps,
        wall_clock_s=so_far.wall_ms / 1000,
    )


def beyond_the_workflow(
    workflow: WorkflowSpec | None, workflow_name: str, task_id: str, before: BudgetTopUp, top_up: BudgetTopUp
) -> str | None:
    """Why ``top_up`` may not be granted on top of ``before`` (a sentence), or None when it may."""
    bound = workflow.max_top_up if workflow is not None else None
    if bound is None:
        return f"workflow {workflow_name!r} grants no top-up (set max_top_up in workflows.yaml to allow one)"
    if over := before.plus(top_up).beyond(bound):
        return (
            f"workflow {workflow_name!r} allows at most {amounts(bound)} of top-ups per task; "
            f"task {task_id} was granted {amounts(before)} so far, so this one is too much: {', '.join(over)}"
        )
    return None


def amounts(top_up: BudgetTopUp) -> str:
    """``1000 tokens, 0.5 USD, 2 steps, 0 s of wall clock``."""
    return (
        f"{top_up.tokens} tokens, {top_up.cost_usd:g} USD, {top_up.steps} steps, "
        f"{top_up.wall_clock_s:g} s of wall clock"
    )
