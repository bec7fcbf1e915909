"""The review service's metrics: the queue, and how reviews end (the measure of an agent's autonomy).

Each decision is counted once, where it is first carried out (``ReviewDesk.finish``), not
when a replica replays the record from Kafka. Escalations are counted where a task is
parked (``handrail_reviews_requested_total``, in ``handrail.metrics``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "handrail_review_decisions_total", "Reviews decided, by workflow and decision.", ["workflow", "decision"]
)
#: approved_unchanged, edited (approved with an edit), rejected, timed_out (the default action).
OUTCOMES = Counter(
    "handrail_review_outcomes_total",
    "How reviews ended, by workflow, agent and outcome: the share approved unchanged is the agent's track record.",
    ["workflow", "agent", "outcome"],
)
DECISION_SECONDS = Histogram(
    "handrail_review_decision_seconds",
    "From the request to the decision, by workflow and decision.",
    ["workflow", "decision"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 8 * 3600, 24 * 3600, 48 * 3600, 7 * 24 * 3600),
)
PENDING = Gauge("handrail_reviews_pending", "Reviews waiting for a person.")
OLDEST_PENDING_SECONDS = Gauge("handrail_review_oldest_pending_seconds", "How long the oldest pending review waits.")

# -- progressive autonomy (``handrail_review.autonomy``), per agent and workflow ---------------------------------
#: 0 approval-gates, 1 exception-based, 2 audit-based: the rank on ``handrail.contracts.graduation.LADDER``.
AUTONOMY_LEVEL = Gauge(
    "handrail_autonomy_level",
    "Effective autonomy level: 0 approval-gates, 1 exception-based, 2 audit-based.",
    ["agent", "workflow"],
)
AUTONOMY_REVIEWS = Gauge(
    "handrail_autonomy_reviews",
    "Reviews the graduation rule counts: requested since the level took effect, at most its window.",
    ["agent", "workflow"],
)
AUTONOMY_RATIO = Gauge(
    "handrail_autonomy_outcome_ratio",
    "Share of the counted reviews by how they ended (approved_unchanged, edited, rejected, timed_out).",
    ["agent", "workflow", "outcome"],
)
AUTONOMY_RECOMMENDATION = Gauge(
    "handrail_autonomy_recommendation",
    "What the graduation rule recommends: 1 promote, 0 hold, -1 demote.",
    ["agent", "workflow"],
)
AUTONOMY_CHANGES = Counter(
    "handrail_autonomy_changes_total",
    "Autonomy levels the graduation rule changed itself (auto: true), by action (promote, demote).",
    ["agent", "workflow", "action"],
)
