"""What each topic carries: its payload models, what the Kafka key of each is, and what the topic is for.

Keyed by channel id, the topic's name without the deployment's prefix; ``AGENT``
stands for every agent's own topic (``agent.<name>``). Which topics exist and
how they are created is ``handrail.topics``; who reads and writes them is
``handrail.bus.acl``.
"""

from __future__ import annotations

from dataclasses import dataclass

from handrail.audit.record import AuditRecord
from handrail.autonomy.records import AutonomyChanged, autonomy_key
from handrail.messages import (
    ControlRecord,
    DeadLetter,
    DecisionEvents,
    HandoffEnvelope,
    Payload,
    ReviewDecided,
    ReviewRequested,
    StepCompleted,
    TaskResult,
    TaskSubmitted,
)

#: The channel id standing for every ``agent.<name>`` topic.
AGENT = "agent.*"

_TASK_ID = "The task id (the payload's `task_id`): a task's messages stay in order on one partition."
# The control topic's keys (``ControlRecord.key``, ``AutonomyChanged.key``), placeholders in angle brackets.
_CONTROL_KEY = "<kind>:<scope>:<name>"
_AUTONOMY_KEY = autonomy_key("<agent>", "<workflow>")


@dataclass(frozen=True)
class Carried:
    """One payload a topic carries, and what its Kafka key is (for a person)."""

    model: type[Payload]
    key: str = _TASK_ID
    #: The key is the payload's ``task_id`` (so it matches the task id pattern).
    keyed_by_task: bool = True


@dataclass(frozen=True)
class Channel:
    """One topic: what it is for, and what it carries."""

    summary: str
    carries: tuple[Carried, ...]


CHANNELS: dict[str, Channel] = {
    "tasks": Channel(
        "Tasks to run: publish a `TaskSubmitted`; resubmitting a task id is idempotent (one task, one result).",
        (Carried(TaskSubmitted),),
    ),
    AGENT: Channel(
        "Handoffs to one agent: the step it is to run, with the task's context, its hashes and a budget snapshot.",
        (Carried(HandoffEnvelope),),
    ),
    "steps": Channel(
        "Each step's report, from the agent that ran it, for the validator to check and move the task on.",
        (Carried(StepCompleted),),
    ),
    "events": Channel(
        "Every model and tool call a worker made (or was stopped from making), for the circuit-breaker.",
        (Carried(DecisionEvents),),
    ),
    "control": Channel(
        "The latest word on each halt, breaker and autonomy override (compacted: one record per key).",
        (
            Carried(ControlRecord, f"`{_CONTROL_KEY}`, so compaction keeps the latest word on each.", False),
            Carried(AutonomyChanged, f"`{_AUTONOMY_KEY}`, so compaction keeps the latest change of each.", False),
        ),
    ),
    "reviews.requested": Channel(
        "Tasks parked for a person, with the whole checkpoint they resume from.", (Carried(ReviewRequested),)
    ),
    "reviews.decided": Channel(
        "Reviewers' decisions and comments; a record whose `decision` is set closes its review.",
        (Carried(ReviewDecided),),
    ),
    "results": Channel(
        "Exactly one `TaskResult` for every task that can be identified, however it ended.", (Carried(TaskResult),)
    ),
    "dlq": Channel(
        "What could not be processed, with the original bytes and why; a dead letter ends nothing by itself.",
        (Carried(DeadLetter, "The task id when it is known (`task_id`); no key otherwise."),),
    ),
    "audit": Channel(
        "Every decision, hash-chained per task (retention: forever): `handrail trace` and `handrail audit verify`.",
        (
            Carried(
                AuditRecord,
                "The chain the record belongs to, its `task_id`: a task id, or for an autonomy change "
                f"`{_AUTONOMY_KEY}`.",
                False,
            ),
        ),
    ),
}


def channel_id(suffix: str) -> str:
    """The entry of ``CHANNELS`` that describes topic ``<prefix><suffix>``."""
    return AGENT if suffix.startswith("agent.") else suffix
