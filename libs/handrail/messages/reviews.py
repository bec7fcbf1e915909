"""The review queue: ``ReviewRequested`` on ``<prefix>reviews.requested``, ``ReviewDecided`` on ``reviews.decided``.

Both are keyed by task id. A review carries its whole checkpoint, so deciding it
needs nothing else: approving resumes the task from that checkpoint, rejecting
ends it. Follow ``reviews.decided`` and read the records whose ``decision`` is
set for the final word on each review.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from handrail.messages.base import Payload
from handrail.messages.calls import BudgetTopUp
from handrail.messages.envelope import HandoffEnvelope
from handrail.messages.proposals import ProposedCall, StepProgress
from handrail.messages.steps import StepCompleted


class ReviewTrigger(StrEnum):
    """Why a task went to a person."""

    RULE = "rule"  # an escalation rule of the workflow held for the step's output
    TOOL_APPROVAL = "tool_approval"  # the model proposed a call to a tool flagged for approval
    LOW_CONFIDENCE = "low_confidence"  # the output's confidence is below the agent's floor
    APPROVAL_GATE = "approval_gate"  # approval gates: every step, and every side effect before it runs
    HALT = "halt"  # a budget, loop or breaker stopped the task before a call
    EVALUATION = "evaluation"  # the step's output still failed its evaluator after its last iteration
    VOTE = "vote"  # a vote's samples did not agree by its rule
    BRANCH_FAILURE = "branch_failure"  # branches of a parallel step failed; the others' outputs wait for a person


class ReviewRequested(Payload):
    """A task parked for a person, with the checkpoint it resumes from.

    Exactly one of ``checkpoint`` (a finished step the validator accepted: approving
    moves the task on from it) and ``halted`` (a handoff a limit stopped: approving
    runs that step again) is set. A request with a ``proposal`` is a call the model
    proposed and nobody made yet: ``halted`` is its step, ``progress`` where the step
    stands; approving runs the call (with any edit applied to its arguments) and the
    step carries on, rejecting ends the task or refuses the call (the tool's
    ``on_reject``). A request for a ``review_id`` already seen, with a
    higher ``level``, replaces it: the review was escalated to ``role`` after a timeout.
    """

    schema_version: Literal[1] = 1
    message_id: str
    review_id: str = Field(description="Stable across redeliveries: derived from the checkpoint's message id.")
    task_id: str
    workflow: str
    step: str
    step_index: int = Field(ge=0)
    agent: str
    reason: str = Field(description="Why a person must decide, for a person.")
    trigger: ReviewTrigger
    rule: str | None = Field(default=None, description="The escalation rule that held, when one did.")
    expression: str | None = Field(default=None, description="That rule's CEL expression.")
    role: str = Field(description="The lowest reviewer role that may decide.")
    approvals_required: int = Field(ge=1, description="Distinct approvers needed.")
    timeout_s: float = Field(gt=0)
    default_action: Literal["reject", "escalate"] = Field(description="What happens when nobody decides in time.")
    level: int = Field(default=0, ge=0, description="0 when first requested; +1 each time a timeout escalated it.")
    context_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="The task's committed head at the checkpoint.")
    checkpoint: StepCompleted | None = None
    halted: HandoffEnvelope | None = None
    halt_error_type: str | None = Field(default=None, description="What stopped the task, for a halt.")
    proposal: ProposedCall | None = Field(default=None, description="The call waiting for approval, before it runs.")
    progress: StepProgress | None = Field(default=None, description="With a proposal: where its step stands.")
    requested_at: datetime
    deadline: datetime = Field(description="When the default action is taken if nobody decided.")

    @model_validator(mode="after")
    def _one_checkpoint(self) -> ReviewRequested:
        if (self.checkpoint is None) == (self.halted is None):
            raise ValueError("exactly one of `checkpoint` and `halted` must be set")
        if (self.proposal is None) != (self.progress is None) or (self.proposal is not None and self.halted is None):
            raise ValueError("a `proposal` comes with its step's `progress` and the `halted` step it stopped")
        return self

    @property
    def context(self) -> dict[str, Any]:
        """The task's context at the checkpoint."""
        source = self.checkpoint if self.checkpoint is not None else self.halted
        assert source is not None
        return source.context


class ReviewAction(StrEnum):
    """What a reviewer (or the review service, on a timeout) did."""

    APPROVE = "approve"
    REJECT = "reject"
    COMMENT = "comment"


class ReviewDecided(Payload):
    """One reviewer's action on a review; ``decision`` is set on the record that closes it."""

    schema_version: Literal[1] = 1
    message_id: str
    review_id: str
    task_id: str
    workflow: str
    action: ReviewAction
    decision: Literal["approved", "rejected"] | None = Field(
        default=None, description="Set when this action decided the review; null for a partial approval or a comment."
    )
    by: str = Field(description="`reviewer:<id>`, or `service:human-review` for a timeout's default action.")
    role: str | None = Field(default=None, description="The role the reviewer decided in.")
    reason: str | None = Field(default=None, description="The reviewer's reason or comment.")
    level: int = Field(default=0, ge=0, description="The request level this action was taken on.")
    edit: list[dict[str, Any]] | None = Field(
        default=None,
        description=(
            "Edit-and-approve: the RFC 6902 JSON Patch applied to the checkpoint's context "
            "(for a proposed call: to the call's arguments)."
        ),
    )
    context_hash: str | None = Field(
        default=None,
        description=(
            "On an approval: the hash of the context the task resumes with (new after an edit). On a partial "
            "approval of a proposed call with an edit: the hash of the edited arguments."
        ),
    )
    approvals: list[str] = Field(default_factory=list, description="Distinct approvers at this level so far.")
    top_up: BudgetTopUp | None = Field(
        default=None,
        description=(
            "Approving a halt: the budget granted with it (bounded by the workflow's max_top_up and the "
            "reviewer's role). A different top-up restarts the approvals, like an edit."
        ),
    )
    decided_at: datetime
