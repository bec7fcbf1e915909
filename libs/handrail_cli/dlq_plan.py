"""What replaying a dead letter would do: send its original to the topic it came from, skip it, or refuse.

Only the topics whose consumers skip a message they have already processed are replayed,
so a replay sent twice (or a replay of a message that went through after all) changes nothing:

- ``tasks``: the router opens a task id once; another submission under it is ignored;
- ``agent.<name>`` and ``steps``: a handoff and a step report are taken once per message id
  (and not at all once their task ended).

The original bytes go back unchanged (the message id, the signature and the context hash in
them are what those consumers check), keyed by the dead letter's task id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from handrail.bus.identity import body_field
from handrail.messages import DeadLetter
from handrail.topics import Topics

#: The payload model consumers of each replayable topic kind decode (the publisher's type header).
_PAYLOAD_TYPES = {"tasks": "TaskSubmitted", "agent": "HandoffEnvelope", "steps": "StepCompleted"}


class Outcome(StrEnum):
    """What became of one dead letter in a replay."""

    REPLAYED = "replayed"
    WOULD_REPLAY = "would_replay"  # --dry-run
    SKIPPED = "skipped"  # nothing to do: a replay would change nothing
    REFUSED = "refused"  # it cannot be replayed: the operator must act otherwise


@dataclass(frozen=True)
class Item:
    """One dead letter's replay: what is (or would be) sent where, or why not."""

    letter: DeadLetter
    outcome: Outcome
    why: str = ""
    topic: str | None = None
    payload_type: str | None = None
    original: bytes = b""

    @property
    def message_id(self) -> str | None:
        """The id inside the original (what its consumer dedupes on), when it names one."""
        found = body_field(self.original, "message_id") if self.original else None
        return found if isinstance(found, str) else None

    def with_outcome(self, outcome: Outcome, why: str = "") -> Item:
        return Item(self.letter, outcome, why or self.why, self.topic, self.payload_type, self.original)

    def as_json(self) -> dict[str, Any]:
        letter = self.letter
        sends = self.outcome in (Outcome.REPLAYED, Outcome.WOULD_REPLAY)
        return {
            "dead_letter_id": letter.message_id,
            "outcome": self.outcome.value,
            "why": self.why or None,
            "task_id": letter.task_id,
            "error_type": letter.error_type,
            "source": f"{letter.source_topic}:{letter.partition}:{letter.offset}",
            "topic": self.topic if sends else None,
            "key": letter.task_id if sends else None,
            "payload_type": self.payload_type if sends else None,
            "message_id": self.message_id if sends else None,
            "size": len(self.original) if sends else None,
            "sha256": hashlib.sha256(self.original).hexdigest() if sends else None,
        }


def plan(letter: DeadLetter, topics: Topics) -> Item:
    """Send ``letter``'s original back to its source topic, or refuse it, saying why (no I/O)."""
    source = letter.source_topic
    if letter.original_truncated:
        return Item(
            letter,
            Outcome.REFUSED,
            f"the dead letter keeps only the first {len(_decoded(letter) or b'')} of the original's"
            f" {letter.original_size} bytes (original_truncated): a cut message cannot be replayed;"
            " the whole one must be published again by whoever sent it",
        )
    original = _decoded(letter)
    if original is None:
        return Item(letter, Outcome.REFUSED, "the dead letter's original is not valid base64: it is damaged")
    if letter.original_sha256 is not None and hashlib.sha256(original).hexdigest() != letter.original_sha256:
        return Item(
            letter, Outcome.REFUSED, "the original does not match its original_sha256: the dead letter is damaged"
        )
    if letter.task_id is None:
        return Item(
            letter,
            Outcome.REFUSED,
            "it names no task (no valid task_id in its body or key): every consumer would refuse it again,"
            " and there is no task whose audit trail could record a replay",
        )
    kind = _kind(source, topics)
    if kind is None:
        return Item(letter, Outcome.REFUSED, _not_replayable(source, topics))
    return Item(letter, Outcome.WOULD_REPLAY, topic=source, payload_type=_PAYLOAD_TYPES[kind], original=original)


def _decoded(letter: DeadLetter) -> bytes | None:
    try:
        return base64.b64decode(letter.original, validate=True)
    except (binascii.Error, ValueError):
        return None


def _kind(topic: str, topics: Topics) -> str | None:
    if topic == topics.tasks:
        return "tasks"
    if topic == topics.steps:
        return "steps"
    if topic.startswith(topics.agent("")) and len(topic) > len(topics.agent("")):
        return "agent"
    return None


def _not_replayable(topic: str, topics: Topics) -> str:
    if not topic.startswith(topics.prefix):
        return f"{topic} is not a topic of this deployment (topic prefix {topics.prefix!r})"
    if topic == topics.events:
        return (
            f"{topic} carries decision events, which feed the circuit-breaker's time windows:"
            " sent again now, old calls would count as new ones"
        )
    if topic in (topics.reviews_requested, topics.reviews_decided):
        return (
            f"a review whose decision could not be carried out is not replayed from {topic}:"
            " its task stays parked; see the review with `handrail review show` and decide it again"
        )
    return f"dead letters from {topic} are not replayable (only from tasks, agent.<name> and steps)"


def duplicate_of(items: list[Item]) -> dict[str, str]:
    """Dead letters of the same bytes from the same topic (a message dead-lettered again after a replay),
    by id: the id of the first of them, which alone is sent."""
    first: dict[tuple[str, str], str] = {}
    duplicates: dict[str, str] = {}
    for item in items:
        if item.outcome != Outcome.WOULD_REPLAY:
            continue
        same = (item.topic or "", hashlib.sha256(item.original).hexdigest())
        if same in first:
            duplicates[item.letter.message_id] = first[same]
        else:
            first[same] = item.letter.message_id
    return duplicates
