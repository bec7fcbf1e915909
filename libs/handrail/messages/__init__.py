"""The public message contract: one versioned pydantic model per payload.

Field names here are a stable contract (see ``schemas/`` and the README):
fields may be added, never renamed or repurposed.
"""

from handrail.messages.base import Payload, derived_message_id, new_message_id, utcnow
from handrail.messages.calls import BudgetSnapshot, BudgetTopUp, Decision, Usage
from handrail.messages.context import Compaction, ContextSeen
from handrail.messages.dead_letter import DeadLetter
from handrail.messages.envelope import ForkPoint, HandoffEnvelope
from handrail.messages.events import ControlRecord, DecisionEvent, DecisionEvents
from handrail.messages.overrides import StepOverrides
from handrail.messages.proposals import ProposedCall, StepProgress, StepResume
from handrail.messages.recordings import RecordedCall, RecordedFailure, StepRecording
from handrail.messages.reviews import ReviewAction, ReviewDecided, ReviewRequested, ReviewTrigger
from handrail.messages.steps import HandoffTaken, StepCompleted
from handrail.messages.tasks import TaskResult, TaskStatus, TaskSubmitted

__all__ = [
    "BudgetSnapshot",
    "BudgetTopUp",
    "Compaction",
    "ContextSeen",
    "ControlRecord",
    "DeadLetter",
    "Decision",
    "DecisionEvent",
    "DecisionEvents",
    "ForkPoint",
    "HandoffEnvelope",
    "HandoffTaken",
    "Payload",
    "ProposedCall",
    "RecordedCall",
    "RecordedFailure",
    "ReviewAction",
    "ReviewDecided",
    "ReviewRequested",
    "ReviewTrigger",
    "StepCompleted",
    "StepOverrides",
    "StepProgress",
    "StepRecording",
    "StepResume",
    "TaskResult",
    "TaskStatus",
    "TaskSubmitted",
    "Usage",
    "derived_message_id",
    "new_message_id",
    "utcnow",
]
