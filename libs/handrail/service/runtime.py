"""Wiring shared by every service: broker, state, contracts, pipeline, and the HTTP side.

Each service serves ``/healthz`` (Kafka and Redis answer) and ``/metrics``
(Prometheus) next to its consumers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.kafka import KafkaBroker
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import make_asgi_app

from handrail.audit import AuditLog
from handrail.audit.acceptance import HopAcceptance
from handrail.autonomy import AutonomyLevels
from handrail.bus import Pipeline, Publisher, make_broker, make_consumer, make_reader
from handrail.bus.security import SaslCredentials
from handrail.contracts import Contracts, load_contracts
from handrail.errors import ContractError
from handrail.lifecycle import Lifecycle
from handrail.metrics import WORKFLOW_MIN_STEPS, labels
from handrail.observability import setup_tracing
from handrail.recovery import Rebuilder, StateKeeper
from handrail.service.probes import DependencyProbe, probe
from handrail.service.settings import ServiceSettings
from handrail.signing import HandoffVerifier, Signer, TrustStore, Verifier, load_signing_key
from handrail.state import TaskStore
from handrail.state.budgets import BudgetStore
from handrail.state.controls import ControlStore
from handrail.state.fences import Fences
from handrail.tools import ToolRegistry, default_registry
from handrail.topics import Topics

#: How long a health probe may wait on Kafka or Redis before calling the service unhealthy.
_HEALTH_TIMEOUT_S = 2.0
#: How long start-up waits for the state (a rebuild) before starting the consumers anyway.
_STATE_AT_START_S = 60.0

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a service's handlers need, built once at start-up."""

    service: str
    settings: ServiceSettings
    credentials: SaslCredentials | None
    broker: KafkaBroker
    redis: aioredis.Redis
    store: TaskStore
    publisher: Publisher
    pipeline: Pipeline
    topics: Topics
    contracts: Contracts
    tools: ToolRegistry
    budgets: BudgetStore
    controls: ControlStore
    audit: AuditLog
    lifecycle: Lifecycle
    keeper: StateKeeper
    #: Each (agent, workflow)'s effective autonomy level: agents.yaml's, or the override in force.
    autonomy: AutonomyLevels


def build_runtime(service: str, settings: ServiceSettings, *, agent: str | None = None) -> Runtime:
    """Load the contracts (failing fast on a bad file) and wire the clients.

    ``agent`` (a worker's): the process runs that agent's steps, and so appends no audit records
    (its Kafka principal may not write the audit topic; the chain head still travels on in the hop
    headers) and never rebuilds the state (its Redis user may not write halts, autonomy levels or
    prompts: a service rebuilds, the worker waits for it).
    """
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tools = default_registry(settings.data_dir)
    contracts = load_contracts(settings.config_dir, tools.names())
    labels.declare(
        workflows=contracts.workflows,
        agents=contracts.agents,
        # An agent's MCP tools are named in its contract, so they are known before their servers are listed.
        tools=tools.names() | {tool for agent in contracts.agents.values() for tool in agent.tools},
        models={model for agent in contracts.agents.values() for model in agent.model_chain},
    )
    for workflow in contracts.workflows.values():
        WORKFLOW_MIN_STEPS.labels(workflow.name).set(len(workflow.steps))
    provider = setup_tracing(service, settings.tracing())
    credentials = settings.kafka_credentials()
    broker = make_broker(settings.kafka_bootstrap, client_id=f"handrail-{service}", credentials=credentials)
    redis = settings.redis_client()
    store = TaskStore(redis, settings.redis_prefix)
    signer, handoffs = _signing(service, settings, contracts)
    publisher = Publisher(broker, signer)
    topics = Topics(settings.topic_prefix)
    # Agents write no audit records (their Kafka principal may not): what an agent did is recorded by
    # the service that verifies its step. Its log still carries the chain head on to that service.
    enabled = settings.audit_enabled and agent is None
    audit = AuditLog(redis, publisher, topics.audit, settings.redis_prefix, enabled=enabled)
    budgets = BudgetStore(redis, settings.redis_prefix)
    lifecycle = Lifecycle(service, store, budgets, publisher, topics, audit)
    pipeline = Pipeline(
        service=service,
        publisher=publisher,
        store=store,
        dlq_topic=topics.dlq,
        audit=audit,
        acceptance=HopAcceptance(redis, settings.redis_prefix, store, audit),
        lifecycle=lifecycle,
        fences=Fences(redis, settings.redis_prefix),
        handoffs=handoffs,
        retry_backoff_s=settings.retry_backoff_s,
        traced=provider is not None,
        max_in_flight=settings.max_in_flight,
        shutdown_grace_s=settings.shutdown_grace_s,
        poison_after_attempts=settings.poison_after_attempts,
    )
    rebuilder = Rebuilder(
        redis,
        settings.redis_prefix,
        topics,
        lambda: make_reader(settings.kafka_bootstrap, f"handrail-{service}-rebuild", credentials),
        settle_s=settings.state_rebuild_settle_s,
        lock_ttl_s=settings.state_rebuild_lock_ttl_s,
    )
    return Runtime(
        service=service,
        settings=settings,
        credentials=credentials,
        broker=broker,
        redis=redis,
        store=store,
        publisher=publisher,
        pipeline=pipeline,
        topics=topics,
        contracts=contracts,
        tools=tools,
        budgets=budgets,
        controls=ControlStore(redis, settings.redis_prefix),
        audit=audit,
        lifecycle=lifecycle,
        keeper=StateKeeper(
            redis, settings.redis_prefix, rebuilder, poll_s=settings.state_poll_s, may_rebuild=agent is None
        ),
        autonomy=AutonomyLevels(redis, settings.redis_prefix, contracts),
    )


def asgi_app(runtime: Runtime) -> AsgiFastStream:
    """The FastStream app with ``/healthz`` and ``/metrics``."""

    @get
    async def healthz(scope: object) -> AsgiResponse:
        seen = await probe(runtime.broker, runtime.redis, _HEALTH_TIMEOUT_S)
        body = f'{{"kafka": {str(seen.kafka).lower()}, "redis": {str(seen.redis).lower()}}}'.encode()
        return AsgiResponse(body, 200 if seen.ok else 503, headers={"content-type": "application/json"})

    dependencies = DependencyProbe(runtime.broker, runtime.redis, timeout_s=_HEALTH_TIMEOUT_S)

    async def start_consumers() -> None:
        settings = runtime.settings
        await dependencies.start()
        # The state first: on a Redis that lost it (or a first start) the consumers would only wait.
        try:
            await asyncio.wait_for(runtime.keeper.ensure(), _STATE_AT_START_S)
        except Exception as exc:  # Redis or Kafka not there yet: the keeper keeps trying in the background
            log.warning(
                "%s: the state is not ready yet (%s: %s); consumers start and wait for it",
                runtime.service,
                type(exc).__name__,
                exc,
            )
        await runtime.keeper.start()
        await runtime.pipeline.start(
            lambda group: make_consumer(
                settings.kafka_bootstrap, group, f"handrail-{runtime.service}", runtime.credentials
            )
        )

    async def close_redis() -> None:
        await runtime.redis.aclose()

    def flush_spans() -> None:
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            provider.shutdown()  # exports what the batch processor still holds

    return AsgiFastStream(
        runtime.broker,
        asgi_routes=[("/healthz", healthz), ("/metrics", make_asgi_app())],
        after_startup=[start_consumers],
        # Drain first: running messages still publish through the broker and use Redis.
        on_shutdown=[runtime.pipeline.stop, runtime.keeper.stop, dependencies.stop, close_redis],
        after_shutdown=[flush_spans],
    )


def _signing(
    service: str, settings: ServiceSettings, contracts: Contracts
) -> tuple[Signer | None, HandoffVerifier | None]:
    """This process's signing key and the verifier of what it consumes, from its settings.

    Signing is required unless ``signing_required`` is explicitly off: then a key and a trust store
    are each used when given, and the process says at start that it does not insist on signatures.
    """
    name = settings.signer or service.removeprefix("worker-")
    has_key = settings.signing_key is not None or settings.signing_key_file is not None
    has_trust = settings.trusted_keys is not None or settings.trusted_keys_file is not None
    if settings.signing_required and not (has_key and has_trust):
        missing = [
            label
            for label, present in (
                ("signing key (HANDRAIL_SIGNING_KEY or HANDRAIL_SIGNING_KEY_FILE)", has_key),
                ("trust store (HANDRAIL_TRUSTED_KEYS or HANDRAIL_TRUSTED_KEYS_FILE)", has_trust),
            )
            if not present
        ]
        raise ContractError(
            f"{service} signs and verifies every hop but has no {' and no '.join(missing)}; "
            f"`handrail keys generate {name}` makes one (the local launcher does it for you), "
            "or set HANDRAIL_SIGNING_REQUIRED=false to run without signatures (never in production)"
        )
    if not settings.signing_required:
        log.warning(
            "%s: HANDRAIL_SIGNING_REQUIRED=false: unsigned hops are accepted (%s, %s); never run production like this",
            service,
            f"signing as {name}" if has_key else "signing nothing",
            "verifying signed ones" if has_trust else "verifying nothing",
        )
    signer = (
        Signer(load_signing_key(name, key=settings.signing_key, key_file=settings.signing_key_file))
        if has_key
        else None
    )
    if not has_trust:
        return signer, None
    trust = (
        TrustStore.from_file(settings.trusted_keys_file)
        if settings.trusted_keys_file is not None
        else TrustStore.from_text(settings.trusted_keys or "")
    )
    return signer, HandoffVerifier(Verifier(trust), contracts, required=settings.signing_required)
