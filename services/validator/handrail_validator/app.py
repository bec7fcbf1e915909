"""Wiring only: the validator's runtime, subscriber and HTTP endpoints."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from handrail.lifecycle import end_on_rejection
from handrail.messages import StepCompleted
from handrail.service import Runtime, asgi_app, build_runtime
from handrail_validator.handlers import SERVICE, ValidatorHandlers
from handrail_validator.settings import ValidatorSettings


def create(settings: ValidatorSettings | None = None) -> tuple[Runtime, AsgiFastStream]:
    """Build the validator app."""
    settings = settings or ValidatorSettings()
    runtime = build_runtime(SERVICE, settings)
    handlers = ValidatorHandlers(runtime)
    runtime.pipeline.subscribe(
        runtime.topics.steps,
        group_id=settings.group("validator"),
        payload_type=StepCompleted,
        handler=handlers.on_step,
        on_rejected=end_on_rejection(f"service:{SERVICE}"),
        topic_kind="steps",
    )
    return runtime, asgi_app(runtime)
