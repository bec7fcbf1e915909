"""Wiring only: the worker's runtime, its agent's runner, subscriber and HTTP endpoints."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from faststream.asgi import AsgiFastStream

from handrail.llm.factory import build_provider
from handrail.llm.models import load_catalogue
from handrail.messages import HandoffEnvelope
from handrail.metrics import labels
from handrail.prompts import PromptLibrary, PromptStore, parse_ref
from handrail.service import Runtime, asgi_app, build_runtime
from handrail.state.effects import EffectStore
from handrail.tools.mcp import McpToolset
from handrail_worker.breakers import SharedModelBreakers
from handrail_worker.handlers import WorkerHandlers
from handrail_worker.reports import StepReporter
from handrail_worker.runner import StepRunner
from handrail_worker.settings import WorkerSettings
from handrail_worker.shadow import ShadowWorker

log = logging.getLogger(__name__)


def create(settings: WorkerSettings) -> tuple[Runtime, AsgiFastStream]:
    """Build the worker app for ``settings.agent`` (or its shadow, ``settings.shadow``)."""
    if settings.shadow:
        return create_shadow(settings)
    # An agent writes no audit records (the validator records each step it verifies, in the agent's
    # name) and never rebuilds the state.
    runtime = build_runtime(f"worker-{settings.agent}", settings, agent=settings.agent)
    agent = runtime.contracts.agent(settings.agent)
    effects = EffectStore(runtime.redis, settings.redis_prefix)
    catalogue = load_catalogue(settings.config_dir)
    labels.declare_models(catalogue.models)
    prompts = PromptStore(PromptLibrary(settings.config_dir / "prompts"), runtime.redis, settings.redis_prefix)
    prompts.library.load(*parse_ref(agent.prompt))  # the declared prompt must load: stop now, not at 3 a.m.
    provider = build_provider(agent, catalogue, breakers=SharedModelBreakers(runtime.controls))
    runner = StepRunner(
        agent,
        provider,
        runtime.tools,
        effects,
        _chaos_hook(settings.chaos_exit_after_tool, "right after {tool} ran, before the step's output is published"),
        prompts=prompts,
        workflows=runtime.contracts.workflows,
        before_effect=_chaos_hook(settings.chaos_exit_before_tool, "right before {tool} runs"),
        autonomy=runtime.autonomy,
        models=catalogue,
        # A forked task may name another model of the catalogue (``handrail task fork --model``).
        override_models=lambda model: build_provider(
            agent.model_copy(update={"model_chain": [model]}), catalogue, breakers=SharedModelBreakers(runtime.controls)
        ),
    )
    # The agent's MCP servers: listed before the consumers start, their allowed tools registered as Tools.
    mcp_tools = McpToolset(agent, runtime.tools)
    handlers = WorkerHandlers(runtime, settings, runner)
    reporter = StepReporter(runtime, agent.name)
    runtime.pipeline.subscribe(
        runtime.topics.agent(agent.name),
        # One group per agent: replicas of an agent share its partitions.
        group_id=settings.group(f"agent-{agent.name}"),
        payload_type=HandoffEnvelope,
        handler=handlers.on_envelope,
        # An agent never ends a task: it reports its step halted or failed, the validator decides.
        on_rejected=reporter.on_rejected,
        on_halted=reporter.on_halted,
        topic_kind="agent",
    )
    app = asgi_app(runtime)
    app.on_startup(mcp_tools.start)
    app.on_shutdown(mcp_tools.close)
    return runtime, app


def create_shadow(settings: WorkerSettings) -> tuple[Runtime, AsgiFastStream]:
    """The agent's shadow: no subscription of the pipeline's, nothing written to Kafka (``handrail_worker.shadow``)."""
    runtime = build_runtime(f"shadow-{settings.agent}", settings, agent=settings.agent)
    agent = runtime.contracts.agent(settings.agent)
    catalogue = load_catalogue(settings.config_dir)
    library = PromptLibrary(settings.config_dir / "prompts")
    shadow = ShadowWorker(runtime, agent, catalogue, library, settings.group(f"shadow-{agent.name}"))
    app = asgi_app(runtime)
    app.on_startup(shadow.start)
    app.on_shutdown(shadow.stop)
    return runtime, app


def _chaos_hook(target: str | None, when: str) -> Callable[[str], None] | None:
    """Fault injection for crash drills: exit the process at a side effect of the tool ``target``."""
    if not target:
        return None

    def exit_at(tool: str) -> None:
        if tool == target:
            log.critical("chaos: exiting %s", when.format(tool=tool))
            os._exit(17)

    return exit_at
