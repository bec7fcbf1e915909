"""The handoff envelope: what one hop hands the next agent."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from handrail.messages.base import Payload
from handrail.messages.calls import BudgetSnapshot
from handrail.messages.overrides import StepOverrides
from handrail.messages.proposals import StepResume


class ForkPoint(BaseModel):
    """Where a branch of a parallel step left the task's chain: the fork's id, the parallel step, its head."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    step: str
    head: str = Field(pattern=r"^[0-9a-f]{64}$", description="The trunk's head the branches left from.")
    branches: dict[str, str] = Field(
        default_factory=dict, description="Every branch of the fork and the agent it was handed to."
    )


class HandoffEnvelope(Payload):
    """Step ``step`` of a task, handed to agent ``receiver`` on ``<prefix>agent.<receiver>``.

    ``context_hash`` is the sha256 of the RFC 8785 canonical JSON of ``context``;
    ``parent_hash`` is the hash the previous hop recorded. A receiver verifies
    both before doing anything.
    """

    envelope_version: Literal[1] = 1
    message_id: str
    task_id: str
    workflow: str
    step: str
    step_index: int = Field(ge=0)
    attempt: int = Field(default=1, ge=1)
    sender: str
    receiver: str
    deadline: datetime | None = None
    goal: str = Field(description="The task's original goal, to re-anchor long tasks.")
    context: dict[str, Any]
    context_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    parent_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    budget: BudgetSnapshot = Field(default_factory=BudgetSnapshot)
    idempotency_key: str
    resume: StepResume | None = Field(
        default=None,
        description="Set when the step stopped for a person to approve a call: the decision and where the step stood.",
    )
    overrides: StepOverrides | None = Field(
        default=None,
        description="A forked task's prompt versions and models per agent, instead of the declared ones.",
    )
    fork: ForkPoint | None = Field(
        default=None, description="For a branch of a parallel step (`<step>.<branch>`): the fork it left from."
    )
    signature: str | None = Field(default=None, description="The sender's signature, when signing is on.")
