"""Wiring only: the circuit-breaker's runtime, subscriber and HTTP endpoints."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from handrail.messages import DecisionEvents, ReviewRequested, TaskResult
from handrail.service import Runtime, asgi_app, build_runtime
from handrail_circuit_breaker.handlers import SERVICE, BreakerHandlers
from handrail_circuit_breaker.settings import BreakerSettings


def create(settings: BreakerSettings | None = None) -> tuple[Runtime, AsgiFastStream]:
    """Build the circuit-breaker app."""
    settings = settings or BreakerSettings()
    runtime = build_runtime(SERVICE, settings)
    handlers = BreakerHandlers(runtime, settings.policy())
    runtime.pipeline.subscribe(
        runtime.topics.events,
        group_id=settings.group("circuit-breaker"),
        payload_type=DecisionEvents,
        handler=handlers.on_events,
        topic_kind="events",
    )
    # Completed tasks are what the agents' baselines learn from.
    runtime.pipeline.subscribe(
        runtime.topics.results,
        group_id=settings.group("circuit-breaker"),
        payload_type=TaskResult,
        handler=handlers.on_result,
        topic_kind="results",
    )
    # Review requests: a canary compares how often each version's tasks go to a person.
    runtime.pipeline.subscribe(
        runtime.topics.reviews_requested,
        group_id=settings.group("circuit-breaker"),
        payload_type=ReviewRequested,
        handler=handlers.on_review,
        topic_kind="reviews_requested",
    )
    return runtime, asgi_app(runtime)
