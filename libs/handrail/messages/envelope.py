"""The handoff envelope: what one hop hands the next agent."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from handrail.messages.base import Payload


class BudgetSnapshot(Payload):
    """What the task has spent so far, and its caps, as the sender saw them."""

    steps_used: int = Field(default=0, ge=0)
    tokens_used: int = Field(default=0, ge=0)
    cost_usd_used: float = Field(default=0.0, ge=0)
    max_steps: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)


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
    signature: str | None = Field(default=None, description="The sender's signature, when signing is on.")
