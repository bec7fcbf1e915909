"""A canary of a prompt version: a share of an agent's tasks runs the candidate, and is judged against live.

``handrail prompts canary AGENT@V --percent P`` writes a ``Canary`` (a pointer in Redis beside the
active version, ``handrail.prompts.store``). Workers resolve the agent's prompt with the task's id:
a task is in the candidate's cohort when ``in_cohort`` says so, the same answer at every step of
the task and in every worker (a hash of the canary's id and the task's id, not a draw). A canary
holds only while the version it is compared with is still the active one: activating another
version ends it.

The circuit-breaker counts each task the agent ran in, per version (``Cohort``), and ``judge`` says
whether the candidate is worse than live by more than the agent's rule (``CanaryRule``): then the
canary is rolled back (``handrail_circuit_breaker.canaries``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum

from handrail.contracts import CanaryRule

#: Cohorts are decided in hundredths of a percent: ``--percent 0.5`` routes one task in two hundred.
_BUCKETS = 10_000


class Arm(StrEnum):
    """Which version a task ran."""

    CANDIDATE = "candidate"
    LIVE = "live"


@dataclass(frozen=True)
class Canary:
    """A candidate version of an agent's prompt, taking ``percent`` of the agent's tasks."""

    id: str
    agent: str
    prompt: str  # the prompt's name
    version: str  # the candidate
    live: str  # the version it is compared with: the active one when the canary started
    percent: float
    by: str
    at: str

    @classmethod
    def start(cls, agent: str, prompt: str, version: str, live: str, percent: float, by: str) -> Canary:
        if not 0 < percent <= 100:
            raise ValueError(f"a canary takes more than 0 and at most 100 percent of the tasks, not {percent}")
        if version == live:
            raise ValueError(f"{prompt}@{version} is the live version already: a canary needs another one")
        at = datetime.now(UTC).isoformat()
        return cls(uuid.uuid4().hex, agent, prompt, version, live, percent, by, at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Canary:
        return cls(**json.loads(text))

    def in_cohort(self, task_id: str) -> bool:
        """Whether task ``task_id`` runs the candidate: the same answer every time it is asked."""
        digest = hashlib.sha256(f"{self.id}:{task_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % _BUCKETS < round(self.percent * _BUCKETS / 100)

    def arm_of(self, version: str) -> Arm | None:
        """The arm a step that rendered ``version`` belongs to; None for any other version (a fork's)."""
        return Arm.CANDIDATE if version == self.version else Arm.LIVE if version == self.live else None

    @property
    def candidate_ref(self) -> str:
        return f"{self.prompt}@{self.version}"

    @property
    def live_ref(self) -> str:
        return f"{self.prompt}@{self.live}"


@dataclass(frozen=True)
class Cohort:
    """One version's tasks in the window, by how they ended."""

    tasks: int = 0
    failed: int = 0  # failed or halted
    rejected: int = 0
    reviewed: int = 0  # review requests (a task sent to a person twice counts twice)
    cost_usd: float = 0.0

    def rate(self, count: int) -> float:
        return count / self.tasks if self.tasks else 0.0

    @property
    def mean_cost_usd(self) -> float:
        return self.cost_usd / self.tasks if self.tasks else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "tasks": self.tasks,
            "failure_rate": round(self.rate(self.failed), 4),
            "rejection_rate": round(self.rate(self.rejected), 4),
            "review_rate": round(self.rate(self.reviewed), 4),
            "mean_cost_usd": round(self.mean_cost_usd, 6),
        }


@dataclass(frozen=True)
class Worse:
    """A measure the candidate is worse on than live, past the rule's margin."""

    measure: str
    candidate: float
    live: float
    margin: float

    def describe(self) -> str:
        """In words: ``failure rate 100.0% against live's 0.0% (allowed: 20.0 points more)``."""
        if self.measure == "mean_cost_usd":
            return (
                f"mean cost per task {self.candidate:.6f} USD against live's {self.live:.6f} USD "
                f"(allowed: {self.margin:g} times)"
            )
        what = self.measure.replace("_", " ")
        return (
            f"{what} {self.candidate:.1%} against live's {self.live:.1%} (allowed: {self.margin * 100:.1f} points more)"
        )


def judge(candidate: Cohort, live: Cohort, rule: CanaryRule) -> list[Worse] | None:
    """What the candidate is worse on; None while either version has fewer than ``min_tasks`` tasks."""
    if candidate.tasks < rule.min_tasks or live.tasks < rule.min_tasks:
        return None
    found = []
    for measure, count, margin in (
        ("failure_rate", "failed", rule.max_failure_rate_increase),
        ("rejection_rate", "rejected", rule.max_rejection_rate_increase),
        ("review_rate", "reviewed", rule.max_review_rate_increase),
    ):
        ours, theirs = candidate.rate(getattr(candidate, count)), live.rate(getattr(live, count))
        if ours - theirs > margin:
            found.append(Worse(measure, ours, theirs, margin))
    ours, theirs = candidate.mean_cost_usd, live.mean_cost_usd
    if theirs > 0 and ours > rule.max_cost_ratio * theirs:
        found.append(Worse("mean_cost_usd", ours, theirs, rule.max_cost_ratio))
    return found
