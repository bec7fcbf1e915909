"""The review desk: index requests, record reviewers' actions, take default actions, resume or end tasks.

Every action a person (or a timeout) takes is recorded atomically in the index
first (distinct approvers, first decision wins), then published on
``reviews.decided``; the decision's effects — resuming the task from its
checkpoint, or ending it — use ids derived from the checkpoint, so doing them
again (a redelivery, a retry after a crash) changes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from handrail.bus import Delivery
from handrail.errors import RetryableError
from handrail.hashing import sha256_hex
from handrail.lifecycle import Park
from handrail.messages import (
    BudgetTopUp,
    ReviewAction,
    ReviewDecided,
    ReviewRequested,
    derived_message_id,
    new_message_id,
    utcnow,
)
from handrail.metrics import labels
from handrail.orchestration import deadline_after
from handrail.service import Runtime
from handrail_review.edits import EditRules
from handrail_review.errors import (
    AlreadyDecided,
    InvalidTopUp,
    NotAllowed,
    NothingChanged,
    ReviewNotFound,
)
from handrail_review.index import Item, ReviewIndex, Vote, VoteOutcome
from handrail_review.metrics import DECISION_SECONDS, DECISIONS, OLDEST_PENDING_SECONDS, OUTCOMES, PENDING
from handrail_review.outcomes import Outcomes, final_record_id
from handrail_review.reviewers import Directory, Reviewer

log = logging.getLogger(__name__)

SERVICE = "human-review"
ACTOR = f"service:{SERVICE}"
#: An edited context travels on in the resumed handoff: as large as a task the router takes, no larger.
DEFAULT_MAX_EDIT_BYTES = 256 * 1024
#: A decision younger than this is left to the request that made it; older unfinished ones were interrupted.
_FINISH_GRACE_MS = 5_000


def now_ms() -> int:
    return int(time.time() * 1000)


class ReviewDesk:
    """The human-review service's logic, bound to its runtime, reviewers and index."""

    def __init__(
        self,
        runtime: Runtime,
        directory: Directory,
        index: ReviewIndex,
        *,
        max_edit_bytes: int = DEFAULT_MAX_EDIT_BYTES,
    ) -> None:
        self.rt = runtime
        self.directory = directory
        self.index = index
        self.outcomes = Outcomes(runtime, index, SERVICE)
        self.rules = EditRules(runtime.contracts, runtime.tools, directory, runtime.budgets, max_edit_bytes)

    # -- the projection of the two topics ---------------------------------------------------------

    async def on_requested(self, request: ReviewRequested) -> None:
        """Index a request (a new review, or one escalated to a higher role)."""
        if await self.index.upsert(request):
            log.info("review %s of task %s pending for %s", request.review_id, request.task_id, request.role)

    async def on_decided(self, record: ReviewDecided, *, finish: bool = True) -> bool:
        """Apply a recorded action; False when its review is not indexed yet (try again later).

        A review's final record is published only after its effects (``Outcomes.finish``), so
        reading one means the review is done: it is marked finished and never carried out again.
        While the index is still being rebuilt (``finish`` False) a decided review is not carried
        out either: its final record may be further on in the log; the sweep finishes what is left.
        """
        if record.action == ReviewAction.COMMENT:
            await self.index.add_record(record)
            return True
        result = await self.index.vote(
            record.review_id,
            Vote(
                message_id=record.message_id,
                level=record.level,
                by=record.by,
                action=record.action.value,
                now_ms=int(record.decided_at.timestamp() * 1000),
                reason=record.reason or "",
                role=record.role or "",
                edit=record.edit,
                edit_hash=(record.context_hash or "") if record.edit else "",
                final=record.decision or "",
                approvers=tuple(record.approvals),
                top_up=record.top_up,
            ),
        )
        if result.outcome == VoteOutcome.UNKNOWN:
            return False
        await self.index.add_record(record)
        if record.message_id == final_record_id(record.review_id, record.level):
            # The replica that carried it out keeps its outcome, even when it writes it after this.
            await self.index.mark_finished(
                record.review_id, "carried out before (its final record is on Kafka)", known=False
            )
        elif finish and result.outcome in (VoteOutcome.APPROVED, VoteOutcome.REJECTED):
            await self.finish(record.review_id)
        return True

    # -- what reviewers do --------------------------------------------------------------------------

    async def get(self, review_id: str) -> Item:
        item = await self.index.get(review_id)
        if item is None:
            raise ReviewNotFound(f"no review {review_id!r}")
        return item

    async def decide(
        self,
        reviewer: Reviewer,
        review_id: str,
        action: ReviewAction,
        reason: str | None = None,
        *,
        edit_context: dict[str, Any] | None = None,
        edit_patch: list[dict[str, Any]] | None = None,
        top_up: BudgetTopUp | None = None,
    ) -> Item:
        """Approve (optionally with an edited context, or a halt with more budget) or reject; the review now."""
        item = await self.get(review_id)
        role = self.directory.deciding_role(reviewer, item.role)
        if role is None:
            raise NotAllowed(
                f"review {review_id} needs the role {item.role!r} or higher; {reviewer.id} has {list(reviewer.roles)}"
            )
        if item.status != "pending":
            raise AlreadyDecided(f"review {review_id} was already {item.status} by {item.fields.get('decided_by')}")
        approving = action == ReviewAction.APPROVE
        edit, edit_hash = self.rules.edit(item.request, edit_context, edit_patch) if approving else (None, "")
        if top_up is not None and top_up.empty:
            top_up = None
        if top_up is not None:
            if action != ReviewAction.APPROVE:
                raise InvalidTopUp("a top-up is granted by approving, not by rejecting")
            await self.rules.top_up(item.request, role, top_up)
        # The resets so far are part of the id: an approval given again after an edit dropped it is a new vote.
        granted = f"/{sha256_hex(top_up.model_dump_json().encode())}" if top_up is not None else ""
        message_id = derived_message_id(
            review_id, f"{item.level}/{item.resets}/{reviewer.id}/{action.value}/{edit_hash}{granted}"
        )
        result = await self.index.vote(
            review_id,
            Vote(
                message_id=message_id,
                level=item.level,
                by=reviewer.actor,
                action=action.value,
                now_ms=now_ms(),
                reason=reason or "",
                role=role,
                edit=edit,
                edit_hash=edit_hash,
                top_up=top_up,
            ),
        )
        if result.outcome == VoteOutcome.DECIDED:
            raise AlreadyDecided(f"review {review_id} was already {result.status} by {result.detail}")
        if result.outcome == VoteOutcome.STALE:
            raise AlreadyDecided(f"review {review_id} was escalated to {result.detail!r} meanwhile; reload it")
        if result.outcome == VoteOutcome.UNKNOWN:
            raise ReviewNotFound(f"no review {review_id!r}")
        if result.outcome in (VoteOutcome.DUPLICATE, VoteOutcome.UNCHANGED):
            raise NothingChanged(
                f"{reviewer.id}'s approval of review {review_id} is already counted "
                f"({len(result.approvers)} of {item.request.approvals_required}: {', '.join(result.approvers)}); "
                "nothing changed"
            )
        if result.dropped:
            log.info(
                "review %s: %s edited the context; the approvals of %s no longer count",
                review_id, reviewer.actor, ", ".join(result.dropped),
            )  # fmt: skip
        if result.outcome == VoteOutcome.PENDING:
            record = ReviewDecided(
                message_id=message_id,
                review_id=review_id,
                task_id=item.request.task_id,
                workflow=item.request.workflow,
                action=action,
                by=reviewer.actor,
                role=role,
                reason=reason,
                level=item.level,
                edit=edit,
                context_hash=edit_hash or None,
                approvals=result.approvers,
                top_up=top_up,
                decided_at=utcnow(),
            )
            await self.rt.publisher.publish(self.rt.topics.reviews_decided, record, key=record.task_id)
            await self.index.add_record(record)
            await self.rt.audit.record(
                record.task_id,
                dedupe_key=message_id,
                actor=reviewer.actor,
                action="review.approval",
                reason=reason,
                workflow=record.workflow,
                step=item.request.step,
                details={
                    "review_id": review_id,
                    "approvals": result.approvers,
                    "approvals_required": item.request.approvals_required,
                    "edit": edit,
                    "top_up": top_up.model_dump() if top_up is not None else None,
                    "approvals_dropped": result.dropped,
                },
            )
        elif result.outcome in (VoteOutcome.APPROVED, VoteOutcome.REJECTED):
            await self.finish(review_id)
        return await self.get(review_id)

    async def comment(self, reviewer: Reviewer, review_id: str, text: str) -> ReviewDecided:
        """Add a comment to the review's trail (any reviewer, any time)."""
        item = await self.get(review_id)
        record = ReviewDecided(
            message_id=new_message_id(),
            review_id=review_id,
            task_id=item.request.task_id,
            workflow=item.request.workflow,
            action=ReviewAction.COMMENT,
            by=reviewer.actor,
            reason=text,
            level=item.level,
            decided_at=utcnow(),
        )
        await self.rt.publisher.publish(self.rt.topics.reviews_decided, record, key=record.task_id)
        await self.index.add_record(record)
        await self.rt.audit.record(
            record.task_id,
            dedupe_key=record.message_id,
            actor=reviewer.actor,
            action="review.commented",
            reason=text,
            workflow=record.workflow,
            details={"review_id": review_id},
        )
        return record

    async def finish(self, review_id: str) -> None:
        """Publish the decision, audit it, and resume or end the task; idempotent.

        Kafka or Redis away is tried again (the sweep); a decision that can never be carried
        out (Kafka refuses its record) is dead-lettered with the reason, not retried forever.
        """
        try:
            item = await self.outcomes.finish(review_id)
        except RetryableError:
            raise
        except Exception as exc:
            await self._dead_letter(review_id, exc)
            return
        if item is None:
            return  # carried out before
        workflow, decision = labels.workflow(item.request.workflow), item.status
        DECISIONS.labels(workflow, decision).inc()
        OUTCOMES.labels(workflow, labels.agent(item.request.agent), _outcome(item)).inc()
        waited_s = (int(item.fields.get("decided_ms") or now_ms()) - item.requested_ms) / 1000
        DECISION_SECONDS.labels(workflow, decision).observe(max(0.0, waited_s))

    async def _dead_letter(self, review_id: str, exc: Exception) -> None:
        """Give up on carrying a decision out: dead-letter its request with the reason; the task stays parked."""
        item = await self.get(review_id)
        request = item.request
        reason = (
            f"review {review_id} was {item.status} by {item.fields.get('decided_by') or ACTOR}, but the decision "
            f"cannot be carried out: {type(exc).__name__}: {exc}"
        )
        delivery = Delivery(self.rt.topics.reviews_requested, -1, -1, request.task_id, request.to_bytes())
        await self.rt.pipeline.dead_letter(
            delivery, reason, "decision_not_carried_out", request.task_id, role=f"dead-letter/{review_id}"
        )
        await self.index.mark_finished(review_id, "dead_lettered")
        log.error("%s", reason)

    # -- deadlines and interrupted decisions ----------------------------------------------------------

    async def sweep(self) -> None:
        """Take the default action on overdue reviews; finish decisions a crash interrupted."""
        now = now_ms()
        for review_id in await self.index.overdue(now):
            item = await self.index.get(review_id)
            if item is not None and item.status == "pending":
                await self._time_out(item)
        for review_id in await self.index.unfinished():
            item = await self.index.get(review_id)
            if item is not None and now - int(item.fields.get("decided_ms") or 0) > _FINISH_GRACE_MS:
                await self.finish(review_id)
        PENDING.set(await self.index.count_pending())
        oldest = await self.index.oldest_pending_ms()
        OLDEST_PENDING_SECONDS.set(max(0.0, (now - oldest) / 1000) if oldest is not None else 0.0)

    async def _time_out(self, item: Item) -> None:
        request = item.request
        higher = self.directory.next_role(item.role) if request.default_action == "escalate" else None
        waited = f"no decision within {request.timeout_s:g}s"
        if higher is not None:
            now = utcnow()
            escalated = request.model_copy(
                update={
                    "message_id": derived_message_id(request.review_id, f"requested/{item.level + 1}"),
                    "level": item.level + 1,
                    "role": higher,
                    "deadline": deadline_after(now, request.timeout_s),
                }
            )
            if await self.index.upsert(escalated):
                reason = f"{waited}: escalated from {item.role} to {higher}"
                await self.rt.lifecycle.apply(Park(escalated, actor=ACTOR, action="review.escalated", reason=reason))
                log.info("review %s escalated from %s to %s", request.review_id, item.role, higher)
            return
        reason = f"{waited}: default action reject"
        if request.default_action == "escalate":
            reason = f"{waited} and no role above {item.role!r} to escalate to: rejected"
        result = await self.index.vote(
            request.review_id,
            Vote(
                message_id=derived_message_id(request.review_id, f"{item.level}/timeout"),
                level=item.level,
                by=ACTOR,
                action="reject",
                now_ms=now_ms(),
                reason=reason,
            ),
        )
        if result.outcome == VoteOutcome.REJECTED:
            await self.finish(request.review_id)


def _outcome(item: Item) -> str:
    """How a decided review ended, for the autonomy measure: approved_unchanged, edited, rejected, timed_out."""
    if item.fields.get("decided_by") == ACTOR:
        return "timed_out"  # nobody decided in time: the service took the default action
    if item.status == "rejected":
        return "rejected"
    return "edited" if item.edit else "approved_unchanged"
