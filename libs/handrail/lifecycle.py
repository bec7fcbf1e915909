"""A task's lifecycle, in one place: the transitions handlers return, and the code that applies them.

A task is opened (``Open``), handed from step to step (``HandOff``: an envelope to
an agent, a step's output to the validator), forked into the branches of a parallel
step (``Fork``) and joined once all of them are in (``Join``), sent back to run a step
again with an evaluator's critique (``Iterate``), parked for a person (``Park``), taken
up again by their decision (``Resume``) and ended with its one ``TaskResult``
(``End``). An operator may run an ended task again from its last accepted step, or
start a new task from one (``handrail.restarts``, built on these transitions).
Handlers decide what happens; they return transitions and
``Lifecycle.apply`` carries them out, each with its state change, its audit record
and its output, in the order that keeps them durable:

1. the state change that decides (open, finish) first: a second writer learns it is
   second before it publishes anything;
2. the audit record next (idempotent, keyed by what caused it), acknowledged by
   Kafka before any output it describes: Kafka orders nothing across topics, and
   rebuilding Redis reads the audit topic as the record, so no output may be on
   Kafka before its record;
3. the outputs last. Every id is derived from
   the message that caused it, so a retry after a crash publishes the very same
   messages and the next hop skips them.

The messages of the lifecycle (the first handoff, the next one, a retry, a step's
report, a result) are built here and nowhere else: a change to what a
``TaskResult`` or a ``HandoffEnvelope`` carries touches this file.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from handrail.bus.delivery import Delivery
from handrail.bus.publisher import AUDIT_HEAD_HEADER, LANE_HEADER, Publisher
from handrail.contracts.workflows import branch_hop
from handrail.errors import Rejected
from handrail.hashing import GENESIS, context_hash, join_hash
from handrail.messages import (
    BudgetSnapshot,
    ForkPoint,
    HandoffEnvelope,
    HandoffTaken,
    ProposedCall,
    ReviewDecided,
    ReviewRequested,
    StepCompleted,
    StepProgress,
    StepRecording,
    TaskResult,
    TaskStatus,
    derived_message_id,
    utcnow,
)
from handrail.metrics import (
    BRANCHES,
    REVIEWS_REQUESTED,
    TASK_COST_USD,
    TASK_STEPS,
    TASK_TOKENS,
    TASKS_FINISHED,
    labels,
)
from handrail.state import Opening, TaskStore
from handrail.state.budgets import Amount, BudgetStore, Caps, Grant, Usage
from handrail.topics import Topics

if TYPE_CHECKING:
    from handrail.audit import AuditLog
    from handrail.audit.log import Decision

log = logging.getLogger(__name__)

#: Where a task's chain of handoffs stands: the envelope an agent took on, or the step it reported.
Hop = HandoffEnvelope | StepCompleted


# -- the transitions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskBudget:
    """A new task's caps and its deadline."""

    caps: Caps
    deadline: datetime


@dataclass(frozen=True)
class Open:
    """Open a task from its submission; a resubmission of its id stops the plan here.

    ``submission`` (the submission's place in the log) is what makes a redelivery
    the same submission; ``genesis`` is the first parent of the task's hash chain.
    ``spent`` is what the task cost before it had a budget (the routing call): it is
    charged to the fresh budget and audited. Without ``audited`` the task is opened
    only to carry its one result (a rejected submission): no ``task.opened`` record.
    """

    task_id: str
    workflow: str
    submission: str
    genesis: str
    actor: str
    submitted_by: str | None = None
    budget: TaskBudget | None = None
    spent: Amount = field(default_factory=Amount)
    first: HandoffEnvelope | None = None
    routing: dict[str, Any] | None = None
    audited: bool = True
    #: More for the ``task.opened`` record's details: a fork's ``forked_from`` (``handrail.restarts``).
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HandOff:
    """Pass the task on: an envelope to its agent's topic, or a step's output to ``steps``.

    The receiver verifies it against the task's committed head and audits it; the
    sender only publishes.
    """

    message: Hop


@dataclass(frozen=True)
class Fork:
    """Start the branches of a parallel step: one handoff per branch, all from the same head (the trunk's,
    which stays there until the join), audited as one ``branches.forked`` record."""

    point: ForkPoint
    handoffs: tuple[HandoffEnvelope, ...]
    actor: str


@dataclass(frozen=True)
class Join:
    """All branches of a parallel step are in: move the trunk's head from the fork point to the joined step's
    hash (once), audit the join with its parents (``branches.joined``: every branch's head, and their
    ``join_hash`` as the record's input), then carry on from the joined step (``then``).

    ``joined`` is the parallel step's report as the branches make it: their outputs under their names.
    Every id is derived from the fork, so whichever branch's report completes the join, and however often
    it is redelivered, the same messages are published.
    """

    joined: StepCompleted
    point: ForkPoint
    parents: dict[str, str]
    then: Transition
    actor: str
    details: dict[str, Any] = field(default_factory=dict)  # more for the record: a vote's tally


@dataclass(frozen=True)
class Iterate:
    """Run a step again because its output failed its evaluator: audit the verdict, then hand the step
    to its agent with the critique in its context (``Orchestrator.iterate``).

    The record (``evaluation.failed``) carries the critique and the diff from the step's context to the
    one handed on; the handoff's id is derived from the step's report, so a redelivery sends the same.
    """

    handoff: HandOff
    iteration: int  # the run the step is handed on for (2: its first iteration)
    max_iterations: int
    critique: tuple[str, ...]
    actor: str
    patch: list[dict[str, Any]] = field(default_factory=list)  # from the step's context to the one handed on


@dataclass(frozen=True)
class Park:
    """Park the task on ``reviews.requested`` with its whole checkpoint, for a person."""

    request: ReviewRequested
    actor: str
    action: str = "review.requested"
    reason: str | None = None


@dataclass(frozen=True)
class Resume:
    """A person decided a parked task: audit the decision, carry it out, then publish it as done.

    The decision record on ``reviews.decided`` comes last: it says "carried out", so
    a review index rebuilt from Kafka never carries a decision out twice.
    """

    decision: ReviewDecided
    request: ReviewRequested
    then: HandOff | Fork | End
    #: More budget granted with the decision, and the parked time given back to the deadline (audited first).
    grant: Grant | None = None


@dataclass(frozen=True)
class End:
    """End the task with its one ``TaskResult``; any later end of the same task publishes nothing.

    Build it with ``End.of`` from the hop the task ends at.
    """

    task_id: str
    workflow: str
    status: TaskStatus
    result_id: str
    actor: str
    budget: BudgetSnapshot | None = None
    output: dict[str, Any] | None = None
    reason: str | None = None
    error_type: str | None = None
    context_hash: str | None = None

    @classmethod
    def of(
        cls,
        hop: Hop,
        status: TaskStatus,
        *,
        actor: str,
        reason: str | None = None,
        error_type: str | None = None,
        output: dict[str, Any] | None = None,
        context_hash: str | None = None,
    ) -> End:
        """The end of the task at ``hop``: its result's id is derived from the hop, so it is the same on a retry."""
        return cls(
            task_id=hop.task_id,
            workflow=hop.workflow,
            status=status,
            result_id=derived_message_id(hop.message_id, "result"),
            actor=actor,
            budget=hop.budget,
            output=output,
            reason=reason,
            error_type=error_type,
            context_hash=hop.context_hash if context_hash is None else context_hash,
        )


Transition = Open | HandOff | Fork | Join | Iterate | Park | Resume | End
#: What a handler returns: nothing, one transition, or several applied in order.
Plan = Transition | Sequence[Transition] | None


def steps_of(plan: Plan) -> list[Transition]:
    if plan is None:
        return []
    if isinstance(plan, Open | HandOff | Fork | Join | Iterate | Park | Resume | End):
        return [plan]
    return list(plan)


def describe(transition: Transition) -> str:
    """A short word for what a transition does to its task: ``handoff:<step>``, ``retry:<step>``, ``completed``..."""
    if isinstance(transition, Resume):
        return describe(transition.then)
    if isinstance(transition, End):
        return transition.status.value
    if isinstance(transition, Iterate):
        return f"iterate:{transition.handoff.message.step}"
    if isinstance(transition, Fork):
        return f"fork:{transition.point.step}"
    if isinstance(transition, Join):
        return f"join:{transition.point.step}"
    if isinstance(transition, HandOff):
        message = transition.message
        if isinstance(message, StepCompleted):
            return f"step.{message.status}:{message.step}"
        return f"{'retry' if message.attempt > 1 else 'handoff'}:{message.step}"
    return "parked" if isinstance(transition, Park) else "opened"


# -- the messages of the lifecycle ----------------------------------------------------------------------


def first_handoff(
    *,
    task_id: str,
    submission: str,
    workflow: str,
    step: str,
    agent: str,
    sender: str,
    goal: str,
    deadline: datetime,
    genesis: str,
    context: dict[str, Any],
    budget: BudgetSnapshot,
) -> HandoffEnvelope:
    """The handoff that starts a task; its id is derived from the submission, so a redelivery sends the same."""
    return HandoffEnvelope(
        message_id=derived_message_id(submission, "handoff"),
        task_id=task_id,
        workflow=workflow,
        step=step,
        step_index=0,
        sender=sender,
        receiver=agent,
        deadline=deadline,
        goal=goal,
        context=context,
        context_hash=context_hash(context),
        parent_hash=genesis,
        budget=budget,
        idempotency_key=f"{task_id}/{step}/1",
    )


def next_handoff(
    step: StepCompleted, *, to_step: str, agent: str, sender: str, context: dict[str, Any], hash_: str
) -> HandoffEnvelope:
    """The handoff of the step after ``step``; its parent is ``step``'s hash, the task's committed head."""
    return HandoffEnvelope(
        message_id=derived_message_id(step.message_id, "handoff"),
        task_id=step.task_id,
        workflow=step.workflow,
        step=to_step,
        step_index=step.step_index + 1,
        sender=sender,
        receiver=agent,
        deadline=step.deadline,
        goal=step.goal,
        context=context,
        context_hash=hash_,
        parent_hash=step.context_hash,
        budget=step.budget,
        idempotency_key=f"{step.task_id}/{to_step}/1",
        overrides=step.overrides,
    )


def branch_handoffs(
    step: StepCompleted,
    *,
    parallel: str,
    branches: dict[str, str],
    sender: str,
    inputs: dict[str, dict[str, Any]] | None = None,
) -> tuple[ForkPoint, tuple[HandoffEnvelope, ...]]:
    """The fork from ``step`` into parallel step ``parallel``: one handoff per branch (name -> agent), each the
    hop ``<parallel>.<branch>`` with ``step``'s context, chained on ``step``'s hash (the committed head). A
    subtask of a plan (``inputs``) also gets its input, under ``subtask`` of its context."""
    point = ForkPoint(
        id=derived_message_id(step.message_id, "fork"), step=parallel, head=step.context_hash, branches=branches
    )

    def context_of(name: str) -> dict[str, Any]:
        if inputs is None:
            return step.context
        return {**step.context, "subtask": {"name": name, "input": inputs[name]}}

    handoffs = tuple(
        HandoffEnvelope(
            message_id=derived_message_id(point.id, name),
            task_id=step.task_id,
            workflow=step.workflow,
            step=f"{parallel}.{name}",
            step_index=step.step_index + 1,
            sender=sender,
            receiver=agent,
            deadline=step.deadline,
            goal=step.goal,
            context=context_of(name),
            context_hash=step.context_hash if inputs is None else context_hash(context_of(name)),
            parent_hash=step.context_hash,
            budget=step.budget,
            idempotency_key=f"{step.task_id}/{parallel}.{name}/1",
            overrides=step.overrides,
            fork=point,
        )
        for name, agent in branches.items()
    )
    return point, handoffs


def joined_step(
    report: StepCompleted, point: ForkPoint, output: dict[str, Any], budgets: list[BudgetSnapshot], agent: str
) -> StepCompleted:
    """The parallel step's report as its branches make it (``report`` is any of theirs): ``output`` (their
    outputs under their names, or a vote's answer) in the context the fork left with, chained on the
    ``join_hash`` of their heads (set by ``Join``)."""
    steps = {k: v for k, v in report.context.get("steps", {}).items() if not k.startswith(f"{point.step}.")}
    fork_context = {k: v for k, v in report.context.items() if k != "subtask"}  # a subtask's own input
    context = {**fork_context, "steps": {**steps, point.step: output}}
    budget = BudgetSnapshot.model_validate(
        {
            **report.budget.model_dump(),
            "steps_used": max(b.steps_used for b in budgets),
            "tokens_used": max(b.tokens_used for b in budgets),
            "cost_usd_used": max(b.cost_usd_used for b in budgets),
        }
    )
    return StepCompleted(
        message_id=derived_message_id(point.id, "join"),
        status="completed",
        task_id=report.task_id,
        workflow=report.workflow,
        step=point.step,
        step_index=report.step_index,
        attempt=1,
        agent=agent,
        goal=report.goal,
        deadline=report.deadline,
        output=output,
        context=context,
        context_hash=context_hash(context),
        parent_hash=point.head,
        patch=[],
        budget=budget,
        finished_at=utcnow(),
        overrides=report.overrides,
    )


def iteration_handoff(
    step: StepCompleted, *, agent: str, sender: str, context: dict[str, Any], iteration: int
) -> HandoffEnvelope:
    """``step``'s step handed to ``agent`` again for run ``iteration``, from ``step``'s hash (the committed head),
    with ``context`` (the critique added)."""
    return HandoffEnvelope(
        message_id=derived_message_id(step.message_id, "iterate"),
        task_id=step.task_id,
        workflow=step.workflow,
        step=step.step,
        step_index=step.step_index + 1,
        sender=sender,
        receiver=agent,
        deadline=step.deadline,
        goal=step.goal,
        context=context,
        context_hash=context_hash(context),
        parent_hash=step.context_hash,
        budget=step.budget,
        idempotency_key=f"{step.task_id}/{step.step}@{iteration}/1",
        overrides=step.overrides,
    )


def retry_handoff(
    halted: HandoffEnvelope, *, message_id: str, sender: str, context: dict[str, Any] | None = None
) -> HandoffEnvelope:
    """A halted step handed to its agent again, from the same head (``attempt`` + 1)."""
    new_context = halted.context if context is None else context
    return halted.model_copy(
        update={
            "message_id": message_id,
            "attempt": halted.attempt + 1,
            "sender": sender,
            "context": new_context,
            "context_hash": context_hash(new_context),
            "parent_hash": halted.context_hash,
            "signature": None,
        }
    )


def halted_handoff(step: StepCompleted, *, sender: str) -> HandoffEnvelope:
    """The handoff a step its agent reported halted stopped in, as approving it would hand it over again."""
    return HandoffEnvelope(
        message_id=step.message_id,
        task_id=step.task_id,
        workflow=step.workflow,
        step=step.step,
        step_index=step.step_index,
        attempt=step.attempt,
        sender=sender,
        receiver=step.agent,
        deadline=step.deadline,
        goal=step.goal,
        context=step.context,
        context_hash=step.context_hash,
        parent_hash=step.parent_hash,
        budget=step.budget,
        idempotency_key=f"{step.task_id}/{step.step}/{step.attempt}",
        overrides=step.overrides,
        fork=step.fork,
    )


def spent_budget(envelope: HandoffEnvelope, spent: Usage) -> BudgetSnapshot:
    """The envelope's budget with what the task has spent so far (from the budget store)."""
    return envelope.budget.model_copy(
        update={"steps_used": spent.steps, "tokens_used": spent.tokens, "cost_usd_used": spent.cost_usd}
    )


def context_after(envelope: HandoffEnvelope, output: dict[str, Any]) -> dict[str, Any]:
    """The task context once ``envelope``'s step produced ``output``: the step's output under ``steps``."""
    return {**envelope.context, "steps": {**envelope.context.get("steps", {}), envelope.step: output}}


def step_completed(
    envelope: HandoffEnvelope,
    *,
    agent: str,
    output: dict[str, Any],
    context: dict[str, Any],
    patch: list[dict[str, Any]],
    budget: BudgetSnapshot,
    **outcome: Any,
) -> StepCompleted:
    """An agent's finished step: its output and the new context (hash and patch) on the envelope's head."""
    return _step(
        envelope, "completed", agent=agent, output=output, context=context, head=envelope.context_hash,
        patch=patch, budget=budget, **outcome,
    )  # fmt: skip


def step_report(
    envelope: HandoffEnvelope,
    *,
    agent: str,
    status: str,
    reason: str,
    error_type: str,
    head: str,
    context: dict[str, Any],
    budget: BudgetSnapshot,
) -> StepCompleted:
    """An agent's report that a step halted or failed; the validator decides what becomes of the task."""
    return _step(
        envelope, status, agent=agent, output={}, context=context, head=head, patch=[], budget=budget,
        reason=reason, error_type=error_type,
    )  # fmt: skip


def step_awaiting_approval(
    envelope: HandoffEnvelope,
    *,
    agent: str,
    proposal: ProposedCall,
    progress: StepProgress,
    budget: BudgetSnapshot,
    recording: StepRecording | None = None,
) -> StepCompleted:
    """An agent's report that its step stopped before a call a person must approve; nothing of the call ran."""
    return _step(
        envelope, "awaiting_approval", agent=agent, output={}, context=envelope.context, head=envelope.context_hash,
        patch=[], budget=budget, reason=proposal.why, error_type="approval_required", proposal=proposal,
        progress=progress, decisions=progress.decisions, usage=progress.usage, context_seen=progress.context_seen,
        recording=recording,
    )  # fmt: skip


def _step(
    envelope: HandoffEnvelope,
    status: str,
    *,
    agent: str,
    output: dict[str, Any],
    context: dict[str, Any],
    head: str,
    patch: list[dict[str, Any]],
    budget: BudgetSnapshot,
    **fields: Any,
) -> StepCompleted:
    """A ``StepCompleted`` of ``envelope``'s step, chained to ``head``; its id is derived from the envelope."""
    return StepCompleted(
        message_id=derived_message_id(envelope.message_id, f"step-{status}"),
        status=status,
        task_id=envelope.task_id,
        workflow=envelope.workflow,
        step=envelope.step,
        step_index=envelope.step_index,
        attempt=envelope.attempt,
        agent=agent,
        goal=envelope.goal,
        deadline=envelope.deadline,
        output=output,
        context=context,
        context_hash=context_hash(context),
        parent_hash=head,
        patch=patch,
        budget=budget,
        finished_at=utcnow(),
        handoff=HandoffTaken(message_id=envelope.message_id, sender=envelope.sender, parent_hash=envelope.parent_hash),
        overrides=envelope.overrides,
        fork=envelope.fork,
        **fields,
    )


# -- applying them --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lifecycle:
    """Applies transitions: the one place a task's state, audit trail and outputs change together.

    ``service`` is the service applying them; what a task spent before it had a budget is charged to it.
    """

    service: str
    store: TaskStore
    budgets: BudgetStore
    publisher: Publisher
    topics: Topics
    audit: AuditLog

    async def apply(self, plan: Plan) -> None:
        """Apply ``plan`` in order; an ``Open`` of an id another submission owns stops it there."""
        for transition in steps_of(plan):
            if not await self._apply(transition):
                return

    async def _apply(self, transition: Transition) -> bool:
        match transition:
            case Open():
                return await self._open(transition)
            case HandOff(message=message):
                await self._hand_off(message)
            case Iterate():
                await self._iterate(transition)
            case Fork():
                await self._fork(transition)
            case Join():
                return await self._join(transition)
            case Park():
                await self._park(transition)
            case Resume():
                await self._resume(transition)
            case End():
                await self.end(transition)
        return True

    async def _open(self, opening: Open) -> bool:
        now = utcnow()
        outcome = await self.store.open(
            opening.task_id, opening.workflow, opening.submission, opening.genesis, now.isoformat()
        )
        if outcome == Opening.DUPLICATE:
            log.info("task %s was already submitted; this resubmission is ignored", opening.task_id)
            return False
        if outcome == Opening.OPENED:
            self.audit.hint(opening.task_id, f"{GENESIS}:0")  # a new task's chain is empty (the append checks)
        budget = opening.budget
        if budget is not None and await self.budgets.open(
            opening.task_id, budget.caps, int(budget.deadline.timestamp() * 1000)
        ):
            await self._charge(opening, budget.caps)
        if opening.audited:
            first = opening.first
            details: dict[str, Any] = {"handed_to": first.receiver if first else None}
            if budget is not None:
                caps = budget.caps
                details["deadline"] = budget.deadline.isoformat()
                details["budget"] = {"max_steps": caps.steps, "max_tokens": caps.tokens, "max_cost_usd": caps.cost_usd}
            if opening.routing is not None:
                details["routing"] = opening.routing
            details.update(opening.lineage)
            spent = opening.spent
            await self.audit.record(
                opening.task_id,
                dedupe_key=opening.submission,
                actor=opening.actor,
                action="task.opened",
                reason=f"submitted by {opening.submitted_by or 'an anonymous caller'}",
                workflow=opening.workflow,
                step=first.step if first else None,
                input_hash=opening.genesis,
                output_hash=first.context_hash if first else None,
                details=details,
                cost_usd=spent.cost_usd,
                tokens=spent.tokens,
            )
        if opening.first is not None:
            await self._hand_off(opening.first)
        return True

    async def _charge(self, opening: Open, caps: Caps) -> None:
        """Charge what the task spent before it had a budget (the routing call) to its fresh budget.

        The call was made before the workflow (and so the caps) were known, so it is
        charged, not reserved: an empty reservation settled with what it cost.
        """
        spent = opening.spent
        if not spent.tokens and not spent.cost_usd:
            return
        reservation_id = derived_message_id(opening.submission, "routing")
        now_ms = int(utcnow().timestamp() * 1000)
        held = await self.budgets.reserve(opening.task_id, reservation_id, self.service, Amount(), caps, now_ms)
        if held.ok:
            await self.budgets.settle(opening.task_id, reservation_id, spent, self.service)

    async def _hand_off(self, message: Hop) -> None:
        topic = self.topics.agent(message.receiver) if isinstance(message, HandoffEnvelope) else self.topics.steps
        head = self.audit.head_of(message.task_id)  # the next service's audit append needs no read of it
        headers = {AUDIT_HEAD_HEADER: head} if head is not None else {}
        if isinstance(message, HandoffEnvelope) and branch_hop(message.step) is not None:
            headers[LANE_HEADER] = message.step  # a branch runs beside the task's other branches
        await self.publisher.publish(topic, message, key=message.task_id, headers=headers)

    async def _fork(self, fork: Fork) -> None:
        point = fork.point
        first = fork.handoffs[0]
        await self.audit.record(
            first.task_id,
            dedupe_key=point.id,
            actor=fork.actor,
            action="branches.forked",
            reason=f"step {point.step!r} runs {len(fork.handoffs)} branches at once",
            workflow=first.workflow,
            step=point.step,
            input_hash=point.head,
            output_hash=point.head,
            details={"fork_id": point.id, "branches": {h.step: h.receiver for h in fork.handoffs}},
        )
        for handoff in fork.handoffs:
            await self._hand_off(handoff)
        BRANCHES.labels(labels.workflow(first.workflow), point.step, "forked").inc(len(fork.handoffs))

    async def _join(self, join: Join) -> bool:
        joined, point = join.joined, join.point
        if not await self.store.join(joined.task_id, point.head, joined.context_hash, point.step):
            log.warning(
                "task %s: the chain moved on from the fork of %r before its join: nothing more is published",
                joined.task_id, point.step,
            )  # fmt: skip
            return False
        await self.audit.record(
            joined.task_id,
            dedupe_key=joined.message_id,
            actor=join.actor,
            action="branches.joined",
            reason=f"all {len(join.parents)} branches of step {point.step!r} are in",
            workflow=joined.workflow,
            step=point.step,
            input_hash=join_hash(join.parents),
            output_hash=joined.context_hash,
            details={"fork_id": point.id, "fork_head": point.head, "parents": join.parents, **join.details},
        )
        BRANCHES.labels(labels.workflow(joined.workflow), point.step, "joined").inc()
        return await self._apply(join.then)

    async def _iterate(self, iterate: Iterate) -> None:
        handoff = iterate.handoff.message
        assert isinstance(handoff, HandoffEnvelope)
        await self.audit.record(
            handoff.task_id,
            dedupe_key=handoff.message_id,
            actor=iterate.actor,
            action="evaluation.failed",
            reason=f"run {iterate.iteration - 1} of {iterate.max_iterations} failed its evaluation: "
            + "; ".join(iterate.critique),
            workflow=handoff.workflow,
            step=handoff.step,
            input_hash=handoff.parent_hash,
            output_hash=handoff.context_hash,
            details={
                "iteration": iterate.iteration,
                "max_iterations": iterate.max_iterations,
                "critique": list(iterate.critique),
                "handed_to": handoff.receiver,
                "patch": iterate.patch,
            },
        )
        await self._hand_off(handoff)

    async def _park(self, park: Park) -> None:
        request = park.request
        await self.audit.record(
            request.task_id,
            dedupe_key=request.message_id,
            actor=park.actor,
            action=park.action,
            reason=park.reason or request.reason,
            workflow=request.workflow,
            step=request.step,
            input_hash=request.context_hash,
            details={
                "review_id": request.review_id,
                "trigger": request.trigger.value,
                "rule": request.rule,
                "role": request.role,
                "level": request.level,
                "approvals_required": request.approvals_required,
                **_proposal_details(request),
            },
        )
        await self.publisher.publish(self.topics.reviews_requested, request, key=request.task_id)
        REVIEWS_REQUESTED.labels(
            labels.workflow(request.workflow), request.rule or request.trigger.value, request.role
        ).inc()

    async def _resume(self, resume: Resume) -> None:
        decision, request = resume.decision, resume.request
        await self.audit.record(
            request.task_id,
            dedupe_key=decision.message_id,
            actor=decision.by,
            action=f"review.{decision.decision}",
            reason=decision.reason,
            workflow=request.workflow,
            step=request.step,
            input_hash=request.context_hash,
            output_hash=decision.context_hash,
            details={
                "review_id": request.review_id,
                "trigger": request.trigger.value,
                "rule": request.rule,
                "level": decision.level,
                "role": request.role,
                "approvals": decision.approvals,
                "edit": decision.edit,
                **_proposal_details(request),
            },
        )
        if resume.grant is not None:
            await self._grant(resume.grant, decision, request)
        await self._apply(resume.then)
        await self.publisher.publish(self.topics.reviews_decided, decision, key=request.task_id)

    async def _grant(self, grant: Grant, decision: ReviewDecided, request: ReviewRequested) -> None:
        await self.grant(
            grant, actor=decision.by, reason=decision.reason, workflow=request.workflow, step=request.step,
            cause={"review_id": request.review_id},
        )  # fmt: skip

    async def grant(
        self,
        grant: Grant,
        *,
        actor: str,
        reason: str | None,
        workflow: str,
        step: str | None,
        cause: dict[str, Any],
    ) -> None:
        """Audit a grant (the record a rebuild folds it from), then raise the caps once; ``cause`` says what
        granted it (a review, an operator's resume)."""
        extra = grant.extra
        await self.audit.record(
            grant.task_id,
            dedupe_key=grant.grant_id,
            actor=actor,
            action="budget.granted",
            reason=reason,
            workflow=workflow,
            step=step,
            details={
                **cause,
                "grant_id": grant.grant_id,
                "agent": grant.agent,
                "top_up": {
                    "tokens": extra.tokens,
                    "cost_usd": extra.cost_usd,
                    "steps": extra.steps,
                    "wall_clock_s": grant.wall_ms / 1000,
                },
                "parked_ms": grant.extend_ms - grant.wall_ms,
                "wall_ms": grant.wall_ms,
                "extend_ms": grant.extend_ms,
            },
        )
        await self.budgets.grant(grant)

    async def end(self, end: End) -> bool:
        """Record the task as ended and publish its result; False when it had ended before.

        A redelivery of what ended the task (same ``result_id``) publishes the same
        result again with the same id, so a crash between the two steps cannot lose
        it - unless the result is known to be on the topic already; any other late
        comer publishes nothing.
        """
        now = utcnow()
        finished = await self.store.finish(end.task_id, end.workflow, end.status.value, end.result_id, now.isoformat())
        if not finished.first and (finished.result_id != end.result_id or finished.published):
            return False
        budget = end.budget or BudgetSnapshot()
        result = TaskResult(
            message_id=end.result_id,
            task_id=end.task_id,
            workflow=end.workflow,
            status=end.status,
            output=end.output,
            reason=end.reason,
            error_type=end.error_type,
            steps=budget.steps_used,
            tokens=budget.tokens_used,
            cost_usd=round(budget.cost_usd_used, 6),
            context_hash=end.context_hash,
            finished_at=now,
            # A resumed task's run, and the result of the run before (``handrail.restarts``).
            epoch=finished.epoch if finished.epoch > 1 else None,
            supersedes=finished.supersedes if finished.epoch > 1 else None,
        )
        await self.audit.record(
            end.task_id,
            dedupe_key=end.result_id,
            actor=end.actor,
            action=f"task.{end.status.value}",
            reason=end.reason,
            workflow=end.workflow,
            input_hash=end.context_hash,
            details={
                "error_type": end.error_type,
                "steps": result.steps,
                "output": end.output,
                **({"epoch": result.epoch, "supersedes": result.supersedes} if result.epoch else {}),
            },
            cost_usd=result.cost_usd,
            tokens=result.tokens,
        )
        await self.publisher.publish(self.topics.results, result, key=end.task_id)
        await self.store.mark_published(end.task_id)
        if finished.first:
            TASKS_FINISHED.labels(labels.workflow(end.workflow), end.status.value).inc()
            TASK_STEPS.labels(labels.workflow(end.workflow), end.status.value).observe(result.steps)
            TASK_TOKENS.labels(labels.workflow(end.workflow)).observe(result.tokens)
            TASK_COST_USD.labels(labels.workflow(end.workflow)).observe(result.cost_usd)
        return True

    @staticmethod
    def accepted_record(step: StepCompleted, *, by: str) -> Decision:
        """The audit record of a verified step (``AuditLog.draft``'s arguments): the handoff the agent took
        on and what it made of it, in one record. The pipeline appends it with the step's acceptance.

        Agents write no audit records (nor can they: no Kafka ACL lets them): the service that verifies
        a step records it, in the agent's name, signed with its own key."""
        handoff = step.handoff
        details: dict[str, Any] = {
            "patch": step.patch,
            "decisions": [d.model_dump(mode="json", exclude_none=True) for d in step.decisions],
            "tools_chosen": [d.name for d in step.decisions if d.kind == "tool_call"],
            "budget": step.budget.model_dump(mode="json"),
            "verified_by": by,
        }
        if handoff is not None:
            details["handoff"] = handoff.model_dump(mode="json")
        if step.context_seen is not None:
            details["context_seen"] = step.context_seen.model_dump(mode="json", exclude_none=True)
        if step.recording is not None:
            # The trail commits to the recording the step report carries (``handrail replay`` checks it).
            details["recording"] = {"hash": step.recording.content_hash(), "calls": len(step.recording.calls)}
        return {
            "dedupe_key": step.message_id,
            "actor": f"agent:{step.agent}",
            "action": f"step.{step.status}",
            "reason": step.reason,
            "workflow": step.workflow,
            "step": step.step,
            "input_hash": step.parent_hash,
            "output_hash": step.context_hash,
            "details": details,
            "cost_usd": step.usage.cost_usd,
            "tokens": step.usage.tokens,
        }


def end_on_rejection(actor: str) -> Callable[[Rejected, Delivery, Any], Awaitable[End | None]]:
    """An ``on_rejected`` hook for handoff consumers: a rejected handoff ends its task.

    A handoff that cannot be verified or processed must never be processed on
    partial state, so its task ends ``failed`` (``rejected`` for input errors),
    carrying what it had spent.
    """

    async def hook(error: Rejected, delivery: Delivery, payload: Any) -> End | None:
        if not isinstance(payload, HandoffEnvelope | StepCompleted):
            return None  # undecodable: the dead letter is the record; the task's deadline ends it
        return End.of(
            payload, TaskStatus(error.task_status), actor=actor, reason=error.reason, error_type=error.error_type
        )

    return hook


def _proposal_details(request: ReviewRequested) -> dict[str, Any]:
    """The audit details of a review of a proposed call: which call, under which key (nothing for other reviews)."""
    proposal = request.proposal
    if proposal is None:
        return {}
    return {"tool": proposal.tool, "args_hash": proposal.args_hash, "idempotency_key": proposal.idempotency_key}
