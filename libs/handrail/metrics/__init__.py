"""Prometheus metrics shared by every service (each service serves them on ``/metrics``).

A label fed from message content goes through ``handrail.metrics.labels`` (bounded values).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
TOOL_RESULTS_INVALID = Counter(
    "handrail_tool_results_invalid_total",
    "Tool results that broke the tool's result schema (the model got an invalid_result error instead).",
    ["agent", "tool"],
)
TOOL_FAILURES = Counter(
    "handrail_tool_failures_total",
    "Failed tool call attempts, by kind (transient, invalid_input, permanent, auth); auth failures page someone.",
    ["agent", "tool", "kind"],
)
TOOL_RETRIES = Counter(
    "handrail_tool_retries_total", "Tool call attempts made again after a transient failure.", ["agent", "tool"]
)
TASK_STEPS = Histogram(
    "handrail_task_steps",
    "Agent steps per ended task; compare with handrail_workflow_min_steps for step efficiency.",
    ["workflow", "status"],
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50),
)
WORKFLOW_MIN_STEPS = Gauge("handrail_workflow_min_steps", "Steps a workflow needs at the least.", ["workflow"])
TASK_TOKENS = Histogram(
    "handrail_task_tokens",
    "Model tokens per ended task.",
    ["workflow"],
    buckets=(0, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000),
)
TASK_COST_USD = Histogram(
    "handrail_task_cost_usd",
    "Cost per ended task, in US dollars.",
    ["workflow"],
    buckets=(0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_TOKENS = Counter(
    "handrail_model_tokens_total", "Model tokens, by agent, model and direction.", ["agent", "model", "direction"]
)
MODEL_COST_USD = Counter(
    "handrail_model_cost_usd_total", "Model cost in US dollars, by agent and model.", ["agent", "model"]
)
CALL_SECONDS = Histogram(
    "handrail_call_seconds",
    "Latency of one model or tool call, by kind, name and outcome.",
    ["kind", "name", "outcome"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BREAKER_STATE = Gauge(
    "handrail_breaker_state", "Breaker state as last announced: 0 closed, 1 half-open, 2 open.", ["scope", "name"]
)
IN_FLIGHT = Gauge(
    "handrail_in_flight_messages", "Messages a consumer is processing or holding in order behind one.", ["consumer"]
)
POISON_MESSAGES = Counter(
    "handrail_poison_messages_total", "Messages dead-lettered after failing the same way again and again.", ["service"]
)
FENCED = Counter(
    "handrail_fenced_messages_total",
    "Messages dropped unapplied because their partition moved to another consumer meanwhile (a woken zombie).",
    ["service"],
)
STATE_REBUILDS = Counter(
    "handrail_state_rebuilds_total",
    "Rebuilds of Redis from Kafka after it lost its state, by outcome (done, failed).",
    ["outcome"],
)
BRANCHES = Counter(
    "handrail_branches_total",
    "Branches of parallel steps, by workflow, step and event (forked: handed to its agent; done: its output "
    "is in; joined: the last one in joined them all).",
    ["workflow", "step", "event"],
)
VOTES = Counter(
    "handrail_votes_total",
    "Votes decided, by workflow, step and outcome (agreed: by the vote's rule; disagreed: short of it).",
    ["workflow", "step", "outcome"],
)
REVIEWS_REQUESTED = Counter(
    "handrail_reviews_requested_total",
    "Tasks parked for a person (and escalations to a higher role), by the rule (or trigger) and role.",
    ["workflow", "rule", "role"],
)
CONSUMER_LAG = Gauge(
    "handrail_consumer_lag_messages",
    "Messages on a consumer's assigned partitions it has not finished (high watermark minus the lowest unfinished).",
    ["consumer", "topic"],
)
DEPENDENCY_UP = Gauge(
    "handrail_dependency_up",
    "Whether the service reached a dependency at its last probe: 1 yes, 0 no (kafka, redis).",
    ["dependency"],
)
