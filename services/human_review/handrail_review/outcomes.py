"""What a decision does: audit it, resume or end the task, and publish it on ``reviews.decided``.

Everything here is idempotent: the final record's id is derived from the review,
the resume's from the checkpoint, so finishing a decision twice (a redelivered
record, a sweep after a crash) publishes the same messages and the task moves once.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import jsonpatch

from handrail.baselines import BEHAVIOUR_DEVIATION
from handrail.lifecycle import End, Fork, HandOff, Resume, describe
from handrail.messages import (
    ControlRecord,
    HandoffEnvelope,
    ReviewAction,
    ReviewDecided,
    StepResume,
    TaskStatus,
    derived_message_id,
    utcnow,
)
from handrail.orchestration import Orchestrator
from handrail.service import Runtime
from handrail.state.budgets import Amount, Grant
from handrail_review.index import Item, ReviewIndex

log = logging.getLogger(__name__)


def final_record_id(review_id: str, level: int) -> str:
    """The message id of the record that closes ``review_id`` at ``level``, published once it is carried out."""
    return derived_message_id(review_id, f"decided/{level}")


class Outcomes:
    """Carries decided reviews out, from the checkpoint they hold."""

    def __init__(self, runtime: Runtime, index: ReviewIndex, service: str) -> None:
        self.rt = runtime
        self.index = index
        self.actor = f"service:{service}"
        self.orchestrator = Orchestrator(service, runtime.contracts)

    async def finish(self, review_id: str) -> Item | None:
        """Publish the decision, audit it, resume or end the task; the review carried out, or None if done before."""
        item = await self.index.get(review_id)
        if item is None or item.status == "pending" or item.finished:
            return None
        request = item.request
        approved = item.status == "approved"
        edit = item.edit if approved else None
        decided_ms = int(item.fields.get("decided_ms") or time.time() * 1000)
        final = ReviewDecided(
            message_id=final_record_id(review_id, item.level),
            review_id=review_id,
            task_id=request.task_id,
            workflow=request.workflow,
            action=ReviewAction.APPROVE if approved else ReviewAction.REJECT,
            decision="approved" if approved else "rejected",
            by=item.fields.get("decided_by") or self.actor,
            role=item.fields.get("decided_role") or None,
            reason=item.fields.get("decision_reason") or None,
            level=item.level,
            edit=edit,
            context_hash=_resumed_hash(item) if approved else None,
            approvals=item.approvers,
            top_up=item.top_up if approved else None,
            decided_at=datetime.fromtimestamp(decided_ms / 1000, UTC),
        )
        then = self._resume(item, final) if approved else self._end(item, final)
        grant = self._grant(item, final, then, decided_ms)
        if grant is not None and isinstance(then, HandOff):
            then = _granted(then, grant)
        if request.halt_error_type == BEHAVIOUR_DEVIATION:
            await self._lift_halt(item, final)
        # The decision record on Kafka comes after its effects: it says "carried out", so that an index
        # rebuilt from Kafka (Redis lost) never carries a review out twice.
        await self.rt.lifecycle.apply(Resume(final, request, then, grant))
        outcome = describe(then)
        await self.index.add_record(final)
        await self.index.mark_finished(review_id, outcome)
        log.info("review %s %s by %s: task %s -> %s", review_id, final.decision, final.by, request.task_id, outcome)
        return item

    async def _lift_halt(self, item: Item, final: ReviewDecided) -> None:
        """The circuit-breaker halted the task for a person to look at (a behavioural deviation): the decision
        lifts it first, or the step it resumes would stop again at its first call. Idempotent (a derived id)."""
        task_id = item.request.task_id
        await self.rt.controls.resume("task", task_id)
        record = ControlRecord(
            message_id=derived_message_id(item.review_id, "halt/resumed"),
            kind="halt",
            scope="task",
            name=task_id,
            state="resumed",
            reason=f"review {item.review_id} {final.decision} by {final.by}",
            by=final.by,
            at=utcnow(),
        )
        await self.rt.publisher.publish(self.rt.topics.control, record, key=record.key)

    def _grant(self, item: Item, final: ReviewDecided, then: HandOff | Fork | End, decided_ms: int) -> Grant | None:
        """What the task gets back for going on: the time it was parked (unless its workflow counts it) and
        the top-up approved with a halt. Nothing for a task that ends here."""
        if isinstance(then, End):
            return None
        request = item.request
        workflow = self.rt.contracts.workflows.get(request.workflow)
        counts = workflow is None or workflow.parked_time_counts
        parked_ms = 0 if counts else max(0, decided_ms - int(request.requested_at.timestamp() * 1000))
        top_up = final.top_up
        wall_ms = round(top_up.wall_clock_s * 1000) if top_up is not None else 0
        if parked_ms + wall_ms == 0 and (top_up is None or top_up.empty):
            return None
        return Grant(
            task_id=request.task_id,
            # One grant per review: carrying the decision out again grants nothing more.
            grant_id=derived_message_id(request.review_id, "grant"),
            agent=request.agent if top_up is not None else "",
            extra=Amount(top_up.tokens, top_up.cost_usd, top_up.steps) if top_up is not None else Amount(),
            wall_ms=wall_ms,
            extend_ms=parked_ms + wall_ms,
        )

    def _resume(self, item: Item, final: ReviewDecided) -> HandOff | Fork | End:
        request = item.request
        if request.proposal is not None:
            return self._decide_call(item, final, approved=True)
        edited = jsonpatch.apply_patch(request.context, final.edit, in_place=False) if final.edit else None
        if request.checkpoint is None:
            assert request.halted is not None
            return self.orchestrator.retry(
                request.halted, message_id=derived_message_id(request.review_id, "retry"), context=edited
            )
        step = request.checkpoint
        workflow = self.rt.contracts.workflows[step.workflow]
        output = None
        if workflow.next_step(step.step) is None:
            output = dict(step.output)
            edited_output = (edited or {}).get("steps", {}).get(step.step)
            if isinstance(edited_output, dict):
                output = dict(edited_output)
            if request.rule is not None:
                output["escalation"] = {"rule": request.rule, "role": item.role, "reason": request.reason}
            output["review"] = {
                "review_id": request.review_id,
                "decision": "approved",
                "approved_by": final.approvals,
                "edited": final.edit is not None,
            }
        return self.orchestrator.advance(step, context=edited, output=output, actor=final.by)

    def _decide_call(self, item: Item, final: ReviewDecided, *, approved: bool) -> HandOff:
        """Hand a proposed call's step back to its agent: run the call as approved (with any edit), or refuse it."""
        request = item.request
        proposal, progress, halted = request.proposal, request.progress, request.halted
        assert proposal is not None
        assert progress is not None
        assert halted is not None
        arguments = proposal.arguments
        if approved and final.edit:
            arguments = jsonpatch.apply_patch(proposal.arguments, final.edit, in_place=False)
        resume = StepResume(
            review_id=request.review_id,
            decision="approved" if approved else "refused",
            arguments=arguments,
            by=final.approvals if approved else [final.by],
            reason=final.reason,
            progress=progress,
        )
        return self.orchestrator.retry(halted, message_id=derived_message_id(request.review_id, "retry"), resume=resume)

    def _end(self, item: Item, final: ReviewDecided) -> End | HandOff:
        request = item.request
        if request.proposal is not None:
            if request.proposal.on_reject == "refuse":
                return self._decide_call(item, final, approved=False)  # the model hears no, and carries on
            assert request.halted is not None
            return End.of(
                request.halted,
                TaskStatus.REJECTED,
                actor=final.by,
                reason=f"the call to {request.proposal.tool} was rejected in review by {final.by}: "
                f"{final.reason or 'no reason given'}; it never ran",
                error_type="review_rejected",
            )
        source = request.checkpoint if request.checkpoint is not None else request.halted
        assert source is not None
        checkpoint = request.checkpoint is not None
        return End.of(
            source,
            TaskStatus.REJECTED if checkpoint else TaskStatus.HALTED,
            actor=final.by,
            reason=f"rejected in review by {final.by}: {final.reason or 'no reason given'}",
            error_type="review_rejected" if checkpoint else request.halt_error_type,
        )


def _granted(then: HandOff, grant: Grant) -> HandOff:
    """The handoff as its receiver should see the task after the grant: the later deadline, the higher caps."""
    envelope = then.message
    if not isinstance(envelope, HandoffEnvelope):
        return then
    budget, extra = envelope.budget, grant.extra
    raised = budget.model_copy(
        update={
            "max_tokens": None if budget.max_tokens is None else budget.max_tokens + extra.tokens,
            "max_cost_usd": None if budget.max_cost_usd is None else budget.max_cost_usd + extra.cost_usd,
            "max_steps": None if budget.max_steps is None else budget.max_steps + extra.steps,
        }
    )
    deadline = envelope.deadline
    if deadline is not None:
        deadline += timedelta(milliseconds=grant.extend_ms)
    return HandOff(envelope.model_copy(update={"deadline": deadline, "budget": raised}))


def _resumed_hash(item: Item) -> str:
    """The context an approved review resumes with: the edited one's, or the checkpoint's (a proposed
    call's edit changes its arguments, not the context)."""
    request = item.request
    if request.proposal is not None:
        return request.context_hash
    return item.fields.get("edit_hash") or request.context_hash
