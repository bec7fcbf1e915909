"""Wiring only: the worker's runtime, its agent's runner, subscriber and HTTP endpoints."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from handrail.bus.results import fail_task_on_rejection
from handrail.llm.factory import build_provider
from handrail.messages import HandoffEnvelope
from handrail.service import Runtime, asgi_app, build_runtime
from handrail_worker.handlers import WorkerHandlers
from handrail_worker.runner import StepRunner
from handrail_worker.settings import WorkerSettings


def create(settings: WorkerSettings) -> tuple[Runtime, AsgiFastStream]:
    """Build the worker app for ``settings.agent``."""
    runtime = build_runtime(f"worker-{settings.agent}", settings)
    agent = runtime.contracts.agent(settings.agent)
    handlers = WorkerHandlers(runtime, settings, StepRunner(agent, build_provider(agent), runtime.tools))
    runtime.pipeline.subscribe(
        runtime.broker,
        runtime.topics.agent(agent.name),
        # One group per agent: replicas of an agent share its partitions.
        group_id=f"handrail-agent-{agent.name}",
        payload_type=HandoffEnvelope,
        handler=handlers.on_envelope,
        on_rejected=fail_task_on_rejection(runtime.store, runtime.publisher, runtime.topics.results),
        topic_kind="agent",
    )
    return runtime, asgi_app(runtime)
