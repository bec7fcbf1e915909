"""Shadow mode: a candidate version of an agent run beside the live one, on copies of its steps, never for real.

A shadow worker (``python -m handrail_worker --agent A --shadow``) reads the agent's handoffs and the
steps topic in a consumer group of its own (``<group prefix>shadow-<agent>``), from where they are
when it first starts. For each step the live agent completed, it runs the step again from the same
handoff with the agent's ``shadow`` (a prompt version, a model, or both), side-effecting tools dry:
they answer what the live step got from the same call, or fail saying they were not run
(``handrail_worker.replay.rerun_live``). Then it compares the two outputs.

Nothing of it reaches the task: no Kafka record is written, no budget charged, none of the task's
state touched. What it found goes to metrics (``handrail_shadow_*``) and to the shadow's own Redis
keys, which ``handrail shadow report AGENT`` reads:

- ``<p>shadow:<agent>:candidates``        the candidates ever shadowed (a set)
- ``<p>shadow:<agent>:<candidate>``       runs, same, changed, failed; cost and milliseconds, live and shadow
- ``<p>shadow:<agent>:<candidate>:recent`` the last disagreements (JSON, newest first)
- ``<p>shadow:<agent>:seen:<step report>`` a step compared once, however often it is redelivered (a day)

It is best effort by design: a step whose handoff it did not see (it started after it) is left out,
as is one in flight when it stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from handrail.contracts import AgentSpec, Shadow
from handrail.errors import ContractError
from handrail.llm import ModelProvider
from handrail.llm.factory import build_provider
from handrail.llm.models import ModelCatalogue
from handrail.messages import HandoffEnvelope, StepCompleted
from handrail.prompts import PromptLibrary, parse_ref
from handrail.service import Runtime
from handrail_worker.replay import LiveRerun, rerun_live

log = logging.getLogger(__name__)

SHADOW_RUNS = Counter(
    "handrail_shadow_runs_total",
    "Live steps run again by the agent's shadow, by how it compared.",
    ["agent", "outcome"],
)
SHADOW_COST = Counter(
    "handrail_shadow_cost_usd_total", "Model cost of the shadowed steps, live and shadow.", ["agent", "version"]
)
SHADOW_SECONDS = Histogram(
    "handrail_shadow_step_seconds",
    "Time in model and tool calls per shadowed step, live and shadow.",
    ["agent", "version"],
)

#: Handoffs kept while their step's report is awaited, and reports kept while their handoff is.
_MAX_HANDOFFS = 10_000
_MAX_WAITING = 1_000
_RECENT = 50
_SEEN_TTL_S = 24 * 3600


def candidate_name(agent: AgentSpec, shadow: Shadow) -> str:
    """The candidate's label: ``<prompt>@<version>`` and/or ``model:<name>``."""
    parts = []
    if shadow.prompt is not None:
        parts.append(f"{parse_ref(agent.prompt)[0]}@{shadow.prompt}")
    if shadow.model is not None:
        parts.append(f"model:{shadow.model}")
    return "+".join(parts)


class ShadowStore:
    """The shadow's findings in Redis (keys in the module's docstring)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, agent: str) -> None:
        self.redis = redis
        self.base = f"{prefix}shadow:{agent}:"

    async def record(self, candidate: str, report_id: str, found: LiveRerun, live_ms: float, shadow_ms: float,
                     live_cost: float) -> bool:  # fmt: skip
        """Count one comparison; False when this step was compared before (a redelivery)."""
        if not await self.redis.set(f"{self.base}seen:{report_id}", "1", nx=True, ex=_SEEN_TTL_S):
            return False
        key = f"{self.base}{candidate}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(f"{self.base}candidates", candidate)
        pipe.hincrby(key, "runs", 1)
        pipe.hincrby(key, found.outcome, 1)
        pipe.hincrbyfloat(key, "live_cost_usd", live_cost)
        pipe.hincrbyfloat(key, "shadow_cost_usd", found.cost_usd)
        pipe.hincrbyfloat(key, "live_ms", live_ms)
        pipe.hincrbyfloat(key, "shadow_ms", shadow_ms)
        if found.outcome != "same":
            entry = {"step": found.step, "report": report_id, "outcome": found.outcome, "detail": found.detail}
            pipe.lpush(f"{key}:recent", json.dumps({**entry, "patch": found.patch[:20]}))
            pipe.ltrim(f"{key}:recent", 0, _RECENT - 1)
        await pipe.execute()
        return True

    async def report(self) -> list[dict[str, Any]]:
        """Per candidate: the counts and sums, and the latest disagreements."""
        out = []
        for raw in sorted(await self.redis.smembers(f"{self.base}candidates")):
            candidate = raw.decode() if isinstance(raw, bytes) else str(raw)
            fields = await self.redis.hgetall(f"{self.base}{candidate}")
            figures = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in fields.items()}
            recent = [json.loads(x) for x in await self.redis.lrange(f"{self.base}{candidate}:recent", 0, _RECENT - 1)]
            out.append({"candidate": candidate, **figures, "recent": recent})
        return out


class ShadowWorker:
    """Runs the agent's shadow beside it (see the module's docstring)."""

    def __init__(
        self, runtime: Runtime, agent: AgentSpec, catalogue: ModelCatalogue, library: PromptLibrary, group: str
    ) -> None:
        shadow = agent.shadow
        if shadow is None:
            raise ContractError(f"agent {agent.name!r} has no `shadow` in agents.yaml: there is nothing to run")
        if agent.mcp_servers:
            raise ContractError(f"agent {agent.name!r}: a shadow of an agent with MCP tools is not supported")
        if shadow.prompt is not None:
            library.load(parse_ref(agent.prompt)[0], shadow.prompt)  # a version that does not load stops it now
        if shadow.model is not None and shadow.model not in catalogue.models:
            raise ContractError(f"agent {agent.name!r}: shadow model {shadow.model!r} is not in models.yaml")
        self.rt = runtime
        self.agent = agent
        self.shadow = shadow
        self.catalogue = catalogue
        self.library = library
        self.group = group
        self.candidate = candidate_name(agent, shadow)
        self.store = ShadowStore(runtime.redis, runtime.settings.redis_prefix, agent.name)
        spec = agent if shadow.model is None else agent.model_copy(update={"model_chain": [shadow.model]})
        self.provider: ModelProvider = build_provider(spec, catalogue)
        self.prompt = f"{parse_ref(agent.prompt)[0]}@{shadow.prompt}" if shadow.prompt is not None else None
        self._handoffs: OrderedDict[str, HandoffEnvelope] = OrderedDict()
        self._waiting: OrderedDict[str, StepCompleted] = OrderedDict()
        self._slots = asyncio.Semaphore(shadow.max_in_flight)
        self._running: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        settings, topics = self.rt.settings, self.rt.topics
        credentials = self.rt.credentials
        self._consumer = AIOKafkaConsumer(
            topics.agent(self.agent.name),
            topics.steps,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=self.group,
            client_id=f"handrail-shadow-{self.agent.name}",
            enable_auto_commit=False,
            auto_offset_reset="latest",  # a new shadow starts from now, not from a week of history
            **(credentials.client_options() if credentials else {}),
        )
        await self._consumer.start()
        self._loop = asyncio.create_task(self._follow(), name=f"shadow-{self.agent.name}")
        log.info("shadow of %s: running %s beside it", self.agent.name, self.candidate)

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._running:
            await asyncio.wait(self._running, timeout=10)
        if self._consumer is not None:
            await self._consumer.stop()
        close = getattr(self.provider, "aclose", None)
        if close is not None:
            await close()

    async def _follow(self) -> None:
        assert self._consumer is not None
        agent_topic = self.rt.topics.agent(self.agent.name)
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            for tp, records in batches.items():
                for record in records:
                    if tp.topic == agent_topic:
                        self._took_handoff(record.value or b"")
                    else:
                        self._took_report(record.value or b"")
            if batches:
                await self._consumer.commit()

    def _took_handoff(self, value: bytes) -> None:
        try:
            envelope = HandoffEnvelope.model_validate_json(value)
        except ValidationError:
            return  # the live worker dead-letters it
        self._handoffs[envelope.message_id] = envelope
        while len(self._handoffs) > _MAX_HANDOFFS:
            self._handoffs.popitem(last=False)
        report = self._waiting.pop(envelope.message_id, None)
        if report is not None:
            self._spawn(envelope, report)

    def _took_report(self, value: bytes) -> None:
        try:
            report = StepCompleted.model_validate_json(value)
        except ValidationError:
            return
        if report.agent != self.agent.name or report.status != "completed" or report.handoff is None:
            return
        envelope = self._handoffs.get(report.handoff.message_id)
        if envelope is None:
            self._waiting[report.handoff.message_id] = report
            while len(self._waiting) > _MAX_WAITING:
                self._waiting.popitem(last=False)
            return
        self._spawn(envelope, report)

    def _spawn(self, envelope: HandoffEnvelope, report: StepCompleted) -> None:
        task = asyncio.create_task(self._compare(envelope, report))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _compare(self, envelope: HandoffEnvelope, report: StepCompleted) -> None:
        async with self._slots:
            started = time.perf_counter()
            try:
                found = await rerun_live(
                    self.agent, self.provider, self.rt.tools, self.rt.contracts.workflows, self.catalogue,
                    self.library, envelope, report, prompt=self.prompt,
                )  # fmt: skip
            except Exception:  # a shadow's own bug must never stop the shadow, nor touch the live task
                log.exception("shadow of %s: step %s of task %s", self.agent.name, report.step, report.task_id)
                return
            shadow_ms = (time.perf_counter() - started) * 1000
        live_ms = sum(d.latency_ms for d in report.decisions)
        live_cost = report.usage.cost_usd
        if not await self.store.record(self.candidate, report.message_id, found, live_ms, shadow_ms, live_cost):
            return
        name = self.agent.name
        SHADOW_RUNS.labels(name, found.outcome).inc()
        SHADOW_COST.labels(name, "live").inc(live_cost)
        SHADOW_COST.labels(name, "shadow").inc(found.cost_usd)
        SHADOW_SECONDS.labels(name, "live").observe(live_ms / 1000)
        SHADOW_SECONDS.labels(name, "shadow").observe(shadow_ms / 1000)
