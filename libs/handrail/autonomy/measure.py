"""How reviews ended, per (agent, workflow), counted from the record: the two review topics.

A review ends with its *final* record on ``reviews.decided``: the one the
human-review service publishes once the decision is carried out, with the
message id ``derived_message_id(review_id, "decided/<level>")``
(``handrail_review.outcomes.final_record_id``). It carries the decision, who made
it and the edit that was approved; the matching ``reviews.requested`` names the
agent. The outcome is the one ``handrail_review_outcomes_total`` counts:

- ``timed_out``: nobody decided in time, the service took the default action;
- ``rejected``; ``edited``: approved with an edit; ``approved_unchanged``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import ValidationError

from handrail.messages import ReviewDecided, ReviewRequested, derived_message_id

#: Who takes a review's default action when nobody decided in time.
REVIEW_SERVICE = "service:human-review"


class Outcome(StrEnum):
    """How a review ended."""

    APPROVED_UNCHANGED = "approved_unchanged"
    EDITED = "edited"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"


def final_record_id(review_id: str, level: int) -> str:
    """The message id of the record that closes ``review_id`` at ``level`` (as the review service derives it)."""
    return derived_message_id(review_id, f"decided/{level}")


def outcome_of(record: ReviewDecided) -> Outcome | None:
    """How the review ended, if ``record`` is its final record; None for any other record."""
    if record.decision is None or record.message_id != final_record_id(record.review_id, record.level):
        return None
    if record.by == REVIEW_SERVICE:
        return Outcome.TIMED_OUT
    if record.decision == "rejected":
        return Outcome.REJECTED
    return Outcome.EDITED if record.edit else Outcome.APPROVED_UNCHANGED


@dataclass(frozen=True)
class Counts:
    """Reviews counted, by outcome."""

    approved_unchanged: int = 0
    edited: int = 0
    rejected: int = 0
    timed_out: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> Counts:
        found = {outcome: 0 for outcome in Outcome}
        for outcome in outcomes:
            found[outcome] += 1
        return cls(**{outcome.value: n for outcome, n in found.items()})

    @property
    def reviews(self) -> int:
        return self.approved_unchanged + self.edited + self.rejected + self.timed_out

    def count(self, outcome: Outcome | str) -> int:
        return int(getattr(self, Outcome(outcome).value))

    def ratio(self, outcome: Outcome | str) -> float:
        """The share of the counted reviews that ended ``outcome`` (0 when none were counted)."""
        return self.count(outcome) / self.reviews if self.reviews else 0.0

    def summary(self) -> dict[str, float | int]:
        """The sample size and each outcome's ratio (what an automatic change records as its evidence)."""
        return {"reviews": self.reviews, **{f"{o.value}_ratio": round(self.ratio(o), 4) for o in Outcome}}


@dataclass(frozen=True)
class Reviewed:
    """One ended review: when it was first requested, and how it ended."""

    review_id: str
    requested_at: datetime
    outcome: Outcome


class Tally:
    """Ended reviews by (agent, workflow), fed the records of both review topics in any order.

    Each review counts once (its final record, however often it is read again).
    """

    def __init__(self) -> None:
        #: review id -> (agent, workflow, first requested at), for reviews not ended yet.
        self._open: dict[str, tuple[str, str, datetime]] = {}
        #: review id -> outcome, for final records read before their request.
        self._early: dict[str, Outcome] = {}
        self._ended: set[str] = set()
        self._by_pair: dict[tuple[str, str], list[Reviewed]] = {}

    def request(self, record: ReviewRequested) -> None:
        """Take in a request (an escalation re-requests the same review: its first request counts)."""
        if record.review_id in self._ended or record.review_id in self._open:
            return
        self._open[record.review_id] = (record.agent, record.workflow, record.requested_at)
        early = self._early.pop(record.review_id, None)
        if early is not None:
            self._end(record.review_id, early)

    def decision(self, record: ReviewDecided) -> None:
        """Take in a record of ``reviews.decided``; only a final one counts."""
        outcome = outcome_of(record)
        if outcome is None or record.review_id in self._ended:
            return
        if record.review_id in self._open:
            self._end(record.review_id, outcome)
        else:
            self._early[record.review_id] = outcome

    def take(self, kind: str, value: bytes) -> bool:
        """Take in the bytes of a record of ``reviews.<kind>`` (requested, decided); False when unreadable."""
        try:
            if kind == "requested":
                self.request(ReviewRequested.model_validate_json(value))
            else:
                self.decision(ReviewDecided.model_validate_json(value))
        except ValidationError:
            return False  # not ours to judge: the review service reports malformed records
        return True

    def _end(self, review_id: str, outcome: Outcome) -> None:
        agent, workflow, requested_at = self._open.pop(review_id)
        self._ended.add(review_id)
        self._by_pair.setdefault((agent, workflow), []).append(Reviewed(review_id, requested_at, outcome))

    def counts(self, agent: str, workflow: str, *, since: datetime | None, window: int) -> Counts:
        """The outcomes of the latest ``window`` reviews of (agent, workflow) requested at or after ``since``."""
        ended = self._by_pair.get((agent, workflow), [])
        counted = [r.outcome for r in ended if since is None or r.requested_at >= since]
        return Counts.of(counted[-window:])
