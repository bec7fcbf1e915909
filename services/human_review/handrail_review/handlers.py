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

import jsonpatch
import jsonschema

from handrail.hashing import context_hash, sha256_hex
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
from handrail.orchestration import deadline_after
from handrail.patch import diff
from handrail.service import Runtime
from handrail_review.errors import (
    AlreadyDecided,
    InvalidEdit,
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
#: A decision younger than this is left to the request that made it; older unfinished ones were interrupted.
_FINISH_GRACE_MS = 5_000


def now_ms() -> int:
    return int(time.time() * 1000)


class ReviewDesk:
    """The human-review service's logic, bound to its runtime, reviewers and index."""

    def __init__(self, runtime: Runtime, directory: Directory, index: ReviewIndex) -> None:
        self.rt = runtime
        self.directory = directory
        self.index = index
        self.outcomes = Outcomes(runtime, index, SERVICE)

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
            item = await self.index.get(record.review_id)
            if item is not None and not item.finished:  # the replica that carried it out keeps its outcome
                await self.index.mark_finished(record.review_id, "carried out before (its final record is on Kafka)")
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
        edit, edit_hash = self._edit(item, edit_context, edit_patch) if action == ReviewAction.APPROVE else (None, "")
        if top_up is not None and top_up.empty:
            top_up = None
        if top_up is not None:
            if action != ReviewAction.APPROVE:
                raise InvalidTopUp("a top-up is granted by approving, not by rejecting")
            await self._check_top_up(item, role, top_up)
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

    async def _check_top_up(self, item: Item, role: str, top_up: BudgetTopUp) -> None:
        """A top-up goes with approving a halt, within the workflow's ``max_top_up`` (all top-ups of the task
        together) and the role's bound per approval."""
        request = item.request
        if request.halted is None or request.checkpoint is not None or request.proposal is not None:
            raise InvalidTopUp(
                f"review {request.review_id} is not of a halted step: a top-up is granted only approving a halt"
            )
        workflow = self.rt.contracts.workflows.get(request.workflow)
        bound = workflow.max_top_up if workflow is not None else None
        if bound is None:
            raise InvalidTopUp(
                f"workflow {request.workflow!r} grants no top-up (set max_top_up in workflows.yaml to allow one)"
            )
        mine = self.directory.top_up_limit(role)
        if mine is not None and (over := top_up.beyond(mine)):
            raise NotAllowed(f"the role {role!r} may grant at most {_amounts(mine)} per approval: {', '.join(over)}")
        so_far = await self.rt.budgets.granted(request.task_id)
        before = BudgetTopUp(
            tokens=so_far.extra.tokens,
            cost_usd=so_far.extra.cost_usd,
            steps=so_far.extra.steps,
            wall_clock_s=so_far.wall_ms / 1000,
        )
        if over := before.plus(top_up).beyond(bound):
            raise InvalidTopUp(
                f"workflow {request.workflow!r} allows at most {_amounts(bound)} of top-ups per task; "
                f"task {request.task_id} was granted {_amounts(before)} so far, so this one is too much: "
                f"{', '.join(over)}"
            )

    def _edit(
        self, item: Item, context: dict[str, Any] | None, patch: list[dict[str, Any]] | None
    ) -> tuple[list[dict[str, Any]] | None, str]:
        """The JSON Patch of an edit-and-approve (against the checkpoint) and the edited document's hash.

        For a proposed call the edit is of the call's arguments (``context`` is then the new arguments),
        and they must satisfy the tool's argument schema: what a person approves is what runs.
        """
        if context is None and patch is None:
            return None, ""
        proposal = item.request.proposal
        what = "the checkpoint's context" if proposal is None else f"the arguments of the call to {proposal.tool}"
        base = item.request.context if proposal is None else proposal.arguments
        if patch is not None:
            try:
                context = jsonpatch.apply_patch(base, patch, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
                raise InvalidEdit(f"the patch does not apply to {what}: {exc}") from None
        if not isinstance(context, dict):
            raise InvalidEdit(f"the edited {what.removeprefix('the ')} must be a JSON object")
        if proposal is not None:
            self._check_arguments(proposal.tool, context)
        ops = diff(base, context)
        if not ops:
            return None, ""
        return ops, context_hash(context)

    def _check_arguments(self, tool: str, arguments: dict[str, Any]) -> None:
        spec = self.rt.tools.get(tool)
        if spec is None:
            raise InvalidEdit(f"the tool {tool!r} is not registered here, so its edited arguments cannot be checked")
        errors = sorted(jsonschema.Draft202012Validator(spec.spec.args_schema).iter_errors(arguments), key=str)
        if errors:
            detail = "; ".join(f"arguments/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:3])
            raise InvalidEdit(f"the edited arguments of {tool} break its schema: {detail}")

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
        """Publish the decision, audit it, and resume or end the task; idempotent."""
        item = await self.outcomes.finish(review_id)
        if item is None:
            return  # carried out before
        workflow, decision = item.request.workflow, item.status
        DECISIONS.labels(workflow, decision).inc()
        OUTCOMES.labels(workflow, item.request.agent, _outcome(item)).inc()
        waited_s = (int(item.fields.get("decided_ms") or now_ms()) - item.requested_ms) / 1000
        DECISION_SECONDS.labels(workflow, decision).observe(max(0.0, waited_s))

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


def _amounts(top_up: BudgetTopUp) -> str:
    return (
        f"{top_up.tokens} tokens, {top_up.cost_usd:g} USD, {top_up.steps} steps, "
        f"{top_up.wall_clock_s:g} s of wall clock"
    )
