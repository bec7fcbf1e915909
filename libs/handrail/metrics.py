"""Prometheus metrics shared by every service (each service serves them on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter("handrail_messages_total", "Messages consumed, by outcome.", ["service", "topic_kind", "outcome"])
HANDOFFS = Counter(
    "handrail_handoffs_total",
    "Handoff verifications by outcome (ok, context_hash_mismatch, parent_hash_mismatch, unknown_task, duplicate).",
    ["service", "outcome"],
)
DEAD_LETTERS = Counter(
    "handrail_dead_letters_total", "Messages dead-lettered, by error type.", ["service", "error_type"]
)
TASKS_FINISHED = Counter("handrail_tasks_finished_total", "Tasks ended, by final status.", ["workflow", "status"])
HANDLE_SECONDS = Histogram(
    "handrail_handle_seconds",
    "Time to process one consumed message, publish included.",
    ["service"],
    # Hops are expected in the low milliseconds; the tail shows broker or Redis stalls.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
TOOL_CALLS = Counter(
    "handrail_tool_calls_total",
    "Tool calls proposed by models, by outcome (ok, error, rejected, short_circuited).",
    ["agent", "tool", "outcome"],
)
