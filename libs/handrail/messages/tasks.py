"""What users publish (`TaskSubmitted`) and what they read back (`TaskResult`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from handrail.messages.base import Payload

#: Task ids become Kafka keys and Redis key parts: keep them printable and bounded.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"


class TaskSubmitted(Payload):
    """A task a user publishes on ``<prefix>tasks``, keyed by its ``task_id``.

    Resubmitting the same ``task_id`` is idempotent: one task, one result.
    """

    schema_version: Literal[1] = 1
    task_id: str = Field(pattern=TASK_ID_PATTERN, description="Chosen by the caller; also the Kafka key.")
    workflow: str = Field(
        min_length=1,
        max_length=200,
        description="Name of a workflow in workflows.yaml, or `auto` to let the router choose (routing.yaml).",
    )
    input: dict[str, Any] = Field(description="The workflow's input, checked against its input schema.")
    submitted_by: str | None = Field(default=None, max_length=200)
    deadline_s: float | None = Field(default=None, gt=0, description="Wall-clock budget for the whole task.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskStatus(StrEnum):
    """How a task ended."""

    COMPLETED = "completed"
    REJECTED = "rejected"
    HALTED = "halted"
    FAILED = "failed"


class TaskResult(Payload):
    """The one final word on a task, on ``<prefix>results``, keyed by ``task_id``.

    A task an operator resumed has one per run: the later ones carry ``epoch`` and ``supersedes``.
    """

    schema_version: Literal[1] = 1
    message_id: str
    task_id: str
    workflow: str
    status: TaskStatus
    output: dict[str, Any] | None = Field(default=None, description="The workflow's output, when completed.")
    reason: str | None = Field(default=None, description="Why it did not complete, for a person.")
    error_type: str | None = Field(default=None, description="Why it did not complete, for a machine.")
    steps: int = Field(ge=0, description="Agent steps the task ran.")
    tokens: int = Field(ge=0, description="Model tokens the task used.")
    cost_usd: float = Field(ge=0, description="What the task cost, in US dollars.")
    context_hash: str | None = None
    finished_at: datetime
    epoch: int | None = Field(
        default=None,
        ge=2,
        description="Set when an operator resumed the task (`handrail task resume`): the run this result ends, "
        "2 for the first resume. Absent: the task's first run.",
    )
    supersedes: str | None = Field(
        default=None,
        description="With `epoch`: the `message_id` of the result this one replaces. The result of the highest "
        "epoch is the task's result.",
    )
