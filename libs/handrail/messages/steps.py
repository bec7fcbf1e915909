"""What a worker reports after one step (`StepCompleted`), with its decision trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from handrail.messages.base import Payload
from handrail.messages.calls import BudgetSnapshot, Decision, Usage
from handrail.messages.context import ContextSeen
from handrail.messages.envelope import ForkPoint
from handrail.messages.overrides import StepOverrides
from handrail.messages.proposals import ProposedCall, StepProgress
from handrail.messages.recordings import StepRecording


class HandoffTaken(BaseModel):
    """The handoff a step was run on: the validator records the agent's taking it on with the step."""

    model_config = ConfigDict(frozen=True)

    message_id: str = Field(description="The `HandoffEnvelope`'s message id.")
    sender: str = Field(description="Who handed the step over: router, validator or human-review.")
    parent_hash: str | None = Field(
        default=None,
        description="The handoff's `parent_hash`: the task's head it left from. After a Redis loss the "
        "rebuilt state still has that head (no agent records taking a handoff on), and the step chains on from it.",
    )


class StepCompleted(Payload):
    """A worker's report of one finished step, on ``<prefix>steps``.

    ``context`` is the task's new context; ``parent_hash`` is the hash of the
    context the worker received, and ``patch`` turns that context into this one.
    A step that a limit stopped (``status="halted"``) or that could not be run
    (``"failed"``) is reported here too, with ``reason`` and ``error_type``: an
    agent only ever reports on its own step, and the validator decides what
    becomes of the task. A step that stopped before a call a person must approve
    (``"awaiting_approval"``) carries the ``proposal`` and the step's ``progress``
    (``handrail.messages.proposals``).
    """

    envelope_version: Literal[1] = 1
    message_id: str
    status: Literal["completed", "halted", "failed", "awaiting_approval"] = "completed"
    reason: str | None = Field(default=None, description="Why the step did not complete, for a person.")
    error_type: str | None = Field(default=None, description="Why the step did not complete, for a machine.")
    task_id: str
    workflow: str
    step: str
    step_index: int = Field(ge=0)
    attempt: int = Field(ge=1)
    agent: str
    goal: str
    deadline: datetime | None = None
    output: dict[str, Any]
    context: dict[str, Any]
    context_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    parent_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    patch: list[dict[str, Any]] = Field(description="RFC 6902 JSON Patch from the parent context.")
    decisions: list[Decision] = Field(default_factory=list)
    confidence: float | None = Field(
        default=None, ge=0, le=1, description="The agent's confidence in its output, when the model reported one."
    )
    usage: Usage = Field(default_factory=Usage)
    budget: BudgetSnapshot = Field(default_factory=BudgetSnapshot)
    finished_at: datetime
    proposal: ProposedCall | None = Field(default=None, description="For `awaiting_approval`: the call to approve.")
    progress: StepProgress | None = Field(default=None, description="For `awaiting_approval`: where the step stands.")
    handoff: HandoffTaken | None = Field(
        default=None, description="The handoff the step ran on (the audit trail records both in one record)."
    )
    context_seen: ContextSeen | None = Field(
        default=None,
        description="What of the context the agent was shown (its view's hash) and what compaction left out.",
    )
    overrides: StepOverrides | None = Field(
        default=None, description="The handoff's overrides (a forked task's), passed on to the next step."
    )
    recording: StepRecording | None = Field(
        default=None,
        description="Every model reply and tool answer the step got, in order (`handrail replay` re-runs the step).",
    )
    fork: ForkPoint | None = Field(
        default=None, description="For a branch of a parallel step: the fork its handoff left from."
    )
    signature: str | None = Field(default=None, description="The agent's signature, when signing is on.")
