"""Wiring only: the router's runtime, subscriber and HTTP endpoints."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from handrail.messages import TaskSubmitted
from handrail.service import Runtime, build_runtime
from handrail.service.runtime import asgi_app
from handrail_router.handlers import SERVICE, RouterHandlers
from handrail_router.settings import RouterSettings


def create(settings: RouterSettings | None = None) -> tuple[Runtime, AsgiFastStream]:
    """Build the router app."""
    settings = settings or RouterSettings()
    runtime = build_runtime(SERVICE, settings)
    handlers = RouterHandlers(runtime, settings)
    runtime.pipeline.subscribe(
        runtime.broker,
        runtime.topics.tasks,
        group_id=settings.consumer_group,
        payload_type=TaskSubmitted,
        handler=handlers.on_task,
        on_rejected=handlers.on_rejected,
        topic_kind="tasks",
    )
    return runtime, asgi_app(runtime)
