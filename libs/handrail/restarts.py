"""Running a task again from a checkpoint: ``handrail task resume`` and ``handrail task fork``.

**Resume** (``Restart``) starts the next run (*epoch*) of a task that ended ``failed`` or
``halted``, from its last good checkpoint (``handrail.checkpoints``): the task record is reopened
with the checkpoint's hash as its committed head, the resume is audited (``task.resumed``: who,
why, the run, the checkpoint, the result it supersedes), a top-up is granted and audited like a
reviewer's (``budget.granted``), and the step after the checkpoint is handed to its agent again.
The run's result is a new ``TaskResult`` with ``epoch`` and ``supersedes``; completed and rejected
tasks are final. Every id is derived from (checkpoint, epoch): two resumes of the same run, at once
or one after the other, reopen it once and publish the very same handoff, which the agent takes
once.

**Fork** (``Fork``) opens a new task on the same workflow from an accepted step of another, with
the step's context and hash (the new task's chain starts at that hash), a fresh budget, and
optionally other prompt versions or models (``StepOverrides``, carried hop to hop). The new task's
``task.opened`` names its source (``forked_from``), the source's ``task.forked`` names the fork
(``forked_to``).

Both are applied in the lifecycle's order: the state change that decides (reopen, open), then the
audit records, then the handoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from handrail.checkpoints import FORKED, RESUMED, Checkpoint, Trail
from handrail.contracts import WorkflowSpec
from handrail.errors import HandrailError
from handrail.hashing import context_hash
from handrail.lifecycle import HandOff, Lifecycle, Open, TaskBudget, next_handoff
from handrail.messages import (
    BudgetSnapshot,
    BudgetTopUp,
    HandoffEnvelope,
    StepCompleted,
    StepOverrides,
    TaskStatus,
    derived_message_id,
    utcnow,
)
from handrail.signing import OPERATOR
from handrail.state.budgets import Amount, Caps, Grant, Usage
from handrail.state.tasks import Reopening


class RestartRefused(HandrailError):
    """A resume or fork that cannot be done as asked (the task's state, the step, the overrides);
    nothing was changed. The message says why and what would work."""


@dataclass(frozen=True)
class Restart:
    """Start run ``epoch`` of an ended task from ``checkpoint``, handing ``handoff`` to its agent."""

    task_id: str
    workflow: str
    epoch: int
    checkpoint: Checkpoint
    #: The head the task's chain is reopened at: the hash the handoff leaves from.
    head: str
    handoff: HandoffEnvelope
    actor: str
    reason: str
    superseded: str | None
    grant: Grant | None = None

    @property
    def resume_id(self) -> str:
        """The resume's id, the same for every attempt at this run: the dedupe key of its records."""
        return resume_id(self.task_id, self.epoch)


@dataclass(frozen=True)
class Fork:
    """Open ``opening`` (the new task, its first handoff from the source's checkpoint) and link both ways."""

    source: str
    checkpoint: Checkpoint
    opening: Open
    actor: str
    reason: str
    overrides: StepOverrides | None

    @property
    def task_id(self) -> str:
        return self.opening.task_id


def resume_id(task_id: str, epoch: int) -> str:
    return derived_message_id(f"{task_id}/resume", str(epoch))


# -- deciding --------------------------------------------------------------------------------------------


def check_resumable(trail: Trail, workflow: WorkflowSpec | None) -> Checkpoint:
    """The checkpoint a resume of ``trail``'s task starts from, or ``RestartRefused`` saying why there is none."""
    task = trail.task_id
    if not trail.opened or workflow is None:
        raise RestartRefused(f"task {task} was never opened (its submission was refused): there is nothing to resume")
    if trail.status is None and trail.resumed_by is not None:
        raise RestartRefused(
            f"task {task} is running again: {trail.resumed_by} resumed it as run {trail.epoch} "
            f"({trail.resumed_why or 'no reason given'})"
        )
    if trail.status is None:
        raise RestartRefused(
            f"task {task} is still running (run {trail.epoch}): only a failed or halted task can be resumed "
            f"(`handrail halt {task}` stops it)"
        )
    if trail.status in (TaskStatus.COMPLETED, TaskStatus.REJECTED):
        run = f" (run {trail.epoch}, resumed by {trail.resumed_by})" if trail.resumed_by is not None else ""
        raise RestartRefused(
            f"task {task} ended {trail.status.value}{run}, which is final: only a failed or halted task can be resumed "
            f"(`handrail task fork {task} --from-step S` starts a new task from one of its steps)"
        )
    checkpoint = trail.last
    if checkpoint is None:
        raise RestartRefused(f"task {task} has no checkpoint on its audit trail to resume from")
    if checkpoint.step not in {s.name for s in workflow.steps}:
        raise RestartRefused(
            f"task {task}'s checkpoint is at step {checkpoint.step!r}, which workflow {workflow.name!r} no longer has"
        )
    if checkpoint.kind == "step" and workflow.next_step(checkpoint.step) is None:
        raise RestartRefused(
            f"task {task}'s last accepted step {checkpoint.step!r} is the workflow's last: nothing is left to run"
        )
    if checkpoint.kind == "step":
        _refuse_parallel(workflow, checkpoint.step)
    return checkpoint


def _refuse_parallel(workflow: WorkflowSpec, step: str) -> None:
    """Resuming or forking into a parallel step is not supported: its branches would need a join of their own."""
    following = workflow.next_step(step)
    if following is not None and following.branches is not None:
        raise RestartRefused(
            f"the step after {step!r} is the parallel step {following.name!r}: a task cannot be resumed or forked "
            "into the branches of a parallel step; resume it from a checkpoint after the join"
        )


def check_forkable(trail: Trail, step: str, workflow: WorkflowSpec | None) -> Checkpoint:
    """The checkpoint of accepted step ``step`` a fork starts from, or ``RestartRefused``."""
    task = trail.task_id
    if not trail.opened or workflow is None:
        raise RestartRefused(f"task {task} was never opened (its submission was refused): there is nothing to fork")
    if step not in {s.name for s in workflow.steps}:
        names = ", ".join(s.name for s in workflow.steps)
        raise RestartRefused(f"workflow {workflow.name!r} has no step {step!r} (its steps: {names})")
    checkpoint = trail.of_step(step)
    if checkpoint is None:
        accepted = ", ".join(trail.accepted_steps()) or "none yet"
        raise RestartRefused(
            f"step {step!r} of task {task} is not an accepted step, so there is no checkpoint to fork from "
            f"(accepted steps: {accepted})"
        )
    if workflow.next_step(step) is None:
        raise RestartRefused(
            f"step {step!r} is the last of workflow {workflow.name!r}: a fork from it has nothing to run"
        )
    _refuse_parallel(workflow, step)
    return checkpoint


def later_agents(workflow: WorkflowSpec, step: str) -> list[str]:
    """The agents of the steps after ``step``: what a fork from it runs."""
    names = [s.name for s in workflow.steps]
    return list(dict.fromkeys(a for s in workflow.steps[names.index(step) + 1 :] for a in s.agents))


def top_up_grant(task_id: str, epoch: int, agent: str, top_up: BudgetTopUp | None, idle_ms: int) -> Grant | None:
    """What a resume grants: the top-up asked for (for the resumed step's ``agent`` too), and the time the task
    sat ended given back to its wall clock. Its id is the resume's: granted once per run."""
    wall_ms = round(top_up.wall_clock_s * 1000) if top_up is not None else 0
    extend_ms = max(0, idle_ms) + wall_ms
    if extend_ms == 0 and (top_up is None or top_up.empty):
        return None
    extra = Amount(top_up.tokens, top_up.cost_usd, top_up.steps) if top_up is not None else Amount()
    grant_id = derived_message_id(resume_id(task_id, epoch), "grant")
    return Grant(task_id, grant_id, agent if top_up is not None else "", extra, wall_ms, extend_ms)


def resumed_handoff(
    source: StepCompleted | HandoffEnvelope,
    workflow: WorkflowSpec,
    epoch: int,
    *,
    spent: Usage,
    grant: Grant | None,
) -> HandoffEnvelope:
    """The handoff run ``epoch`` starts with: the step after the checkpoint ``source`` (a step), or the
    opening's first handoff again; sent by the operator, its id derived from the checkpoint and the run."""
    message_id = derived_message_id(source.message_id, f"resume/{epoch}")
    if isinstance(source, StepCompleted):
        following = workflow.next_step(source.step)
        assert following is not None, "check_resumable refuses the last step"
        envelope = next_handoff(
            source, to_step=following.name, agent=following.agents[0], sender=OPERATOR, context=source.context,
            hash_=source.context_hash,
        )  # fmt: skip
    else:
        envelope = source.model_copy(update={"sender": OPERATOR, "signature": None})
    budget = envelope.budget.model_copy(
        update={"steps_used": spent.steps, "tokens_used": spent.tokens, "cost_usd_used": spent.cost_usd}
    )
    deadline = envelope.deadline
    if grant is not None:
        extra = grant.extra
        budget = budget.model_copy(
            update={
                "max_tokens": None if budget.max_tokens is None else budget.max_tokens + extra.tokens,
                "max_cost_usd": None if budget.max_cost_usd is None else budget.max_cost_usd + extra.cost_usd,
                "max_steps": None if budget.max_steps is None else budget.max_steps + extra.steps,
            }
        )
        if deadline is not None:
            deadline += timedelta(milliseconds=grant.extend_ms)
    return envelope.model_copy(update={"message_id": message_id, "budget": budget, "deadline": deadline})


def fork_id(source: str, checkpoint: Checkpoint, overrides: StepOverrides | None) -> str:
    """A fork's task id when none is given: the same for the same source, step and overrides (so asking twice
    makes one fork)."""
    what = overrides.model_dump_json() if overrides is not None else ""
    digest = derived_message_id(f"{checkpoint.message_id}/fork", what).replace("-", "")[:10]
    return f"{source[:160]}.fork-{digest}"


def fork_opening(
    new_task: str,
    source: StepCompleted,
    checkpoint: Checkpoint,
    workflow: WorkflowSpec,
    overrides: StepOverrides | None,
    *,
    actor: str,
) -> Open:
    """The new task's opening: a fresh budget (the workflow's limits), its chain starting at the step's hash, and
    the step after it handed over with the step's context."""
    submission = derived_message_id(f"{checkpoint.message_id}/fork", new_task)
    following = workflow.next_step(source.step)
    assert following is not None, "check_forkable refuses the last step"
    limits = workflow.limits
    deadline = utcnow() + timedelta(seconds=limits.deadline_s)
    first = HandoffEnvelope(
        message_id=derived_message_id(submission, "handoff"),
        task_id=new_task,
        workflow=workflow.name,
        step=following.name,
        step_index=source.step_index + 1,
        sender=OPERATOR,
        receiver=following.agent,
        deadline=deadline,
        goal=source.goal,
        context=source.context,
        context_hash=context_hash(source.context),
        parent_hash=source.context_hash,
        budget=BudgetSnapshot(
            max_steps=limits.max_steps, max_tokens=limits.max_tokens, max_cost_usd=limits.max_cost_usd
        ),
        idempotency_key=f"{new_task}/{following.name}/1",
        overrides=overrides,
    )
    lineage = _lineage(source.task_id, checkpoint, overrides)
    return Open(
        task_id=new_task,
        workflow=workflow.name,
        submission=submission,
        genesis=source.context_hash,
        actor=actor,
        submitted_by=actor,
        budget=TaskBudget(Caps(limits.max_tokens, limits.max_cost_usd, limits.max_steps), deadline),
        first=first,
        lineage={"forked_from": lineage},
    )


def merged_overrides(carried: StepOverrides | None, asked: StepOverrides | None) -> StepOverrides | None:
    """The source's overrides (a fork of a fork) with the ones asked for on top."""
    if asked is None:
        return carried
    if carried is None:
        return asked
    return StepOverrides(prompts={**carried.prompts, **asked.prompts}, models={**carried.models, **asked.models})


def _lineage(task_id: str, checkpoint: Checkpoint, overrides: StepOverrides | None) -> dict[str, Any]:
    lineage: dict[str, Any] = {
        "task_id": task_id,
        "step": checkpoint.step,
        "checkpoint": checkpoint.message_id,
        "context_hash": checkpoint.context_hash,
    }
    if overrides is not None and not overrides.empty:
        lineage["overrides"] = overrides.model_dump(mode="json")
    return lineage


# -- applying --------------------------------------------------------------------------------------------


async def apply_restart(lifecycle: Lifecycle, restart: Restart) -> Reopening:
    """Reopen, audit, grant, hand over; ``Reopening.ALREADY`` when this run was started before (the same
    records and handoff are sent again: each is taken once)."""
    outcome = await lifecycle.store.reopen(restart.task_id, restart.epoch, restart.head, utcnow().isoformat())
    if outcome.outcome == Reopening.STALE:
        raise RestartRefused(
            f"task {restart.task_id} was resumed again meanwhile (it is on run {outcome.detail}): look at it again"
        )
    if outcome.outcome == Reopening.NOT_RESUMABLE:
        raise RestartRefused(f"task {restart.task_id} is {outcome.detail} now: only a failed or halted task resumes")
    if outcome.outcome == Reopening.UNKNOWN_TASK:
        raise RestartRefused(
            f"task {restart.task_id} is not in the state store any more (its record expires a week after it ended)"
        )
    checkpoint, handoff, grant = restart.checkpoint, restart.handoff, restart.grant
    details: dict[str, Any] = {
        "epoch": restart.epoch,
        "checkpoint": {"kind": checkpoint.kind, "step": checkpoint.step, "message_id": checkpoint.message_id},
        "supersedes": restart.superseded,
        "handed_to": handoff.receiver,
        "step_resumed": handoff.step,
    }
    if grant is not None:
        details["grant_id"] = grant.grant_id
    await lifecycle.audit.record(
        restart.task_id,
        dedupe_key=restart.resume_id,
        actor=restart.actor,
        action=RESUMED,
        reason=restart.reason,
        workflow=restart.workflow,
        step=handoff.step,
        input_hash=restart.head,
        output_hash=handoff.context_hash,
        details=details,
    )
    if grant is not None:
        await lifecycle.grant(
            grant, actor=restart.actor, reason=restart.reason, workflow=restart.workflow, step=handoff.step,
            cause={"resume_id": restart.resume_id, "epoch": restart.epoch},
        )  # fmt: skip
    await lifecycle.apply(HandOff(handoff))
    return outcome.outcome


async def apply_fork(lifecycle: Lifecycle, fork: Fork) -> None:
    """Open the fork (its ``task.opened`` names the source, then its first handoff), then record ``forked_to`` on
    the source. A crash between the two is mended by running the same fork again (every id is derived)."""
    opening = fork.opening
    owner = (await lifecycle.store.get(opening.task_id)).get("submission")
    if owner is not None and owner != opening.submission:
        raise RestartRefused(f"task id {opening.task_id!r} is taken by another task: give the fork another --task-id")
    await lifecycle.apply(opening)
    await lifecycle.audit.record(
        fork.source,
        dedupe_key=opening.submission,
        actor=fork.actor,
        action=FORKED,
        reason=fork.reason,
        workflow=opening.workflow,
        step=fork.checkpoint.step,
        input_hash=fork.checkpoint.context_hash,
        details={
            "forked_to": {**_lineage(opening.task_id, fork.checkpoint, fork.overrides), "step": fork.checkpoint.step}
        },
    )
