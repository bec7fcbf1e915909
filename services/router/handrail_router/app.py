"""Wiring only: the router's runtime, task router, subscriber and HTTP endpoints."""

from __future__ import annotations

import httpx
from faststream.asgi import AsgiFastStream

from handrail.messages import TaskSubmitted
from handrail.service import Runtime, build_runtime
from handrail.service.runtime import asgi_app
from handrail_router.handlers import SERVICE, RouterHandlers
from handrail_router.routing import load_task_router
from handrail_router.settings import RouterSettings


def create(settings: RouterSettings | None = None) -> tuple[Runtime, AsgiFastStream]:
    """Build the router app."""
    settings = settings or RouterSettings()
    runtime = build_runtime(SERVICE, settings)
    http_client = httpx.AsyncClient()  # the classifier's models, if routing.yaml configures one
    router = load_task_router(
        settings.config_dir,
        runtime.contracts.workflows,
        timeout_s=settings.classify_timeout_s,
        http_client=http_client,
    )
    handlers = RouterHandlers(runtime, settings, router)
    runtime.pipeline.subscribe(
        runtime.topics.tasks,
        group_id=settings.group("router"),
        payload_type=TaskSubmitted,
        handler=handlers.on_task,
        on_rejected=handlers.on_rejected,
        topic_kind="tasks",
    )
    app = asgi_app(runtime)

    async def close_http_client() -> None:
        await http_client.aclose()

    app.on_shutdown(close_http_client)
    return runtime, app
