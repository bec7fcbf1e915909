"""The faults the soak injects, one after another, at random times.

Each kind hurts one part the way production does: a process killed at any
instruction, a worker frozen past its session timeout, the broker killed,
Redis killed with all its state, bytes no parser should choke on, a model
that throttles, errors, talks nonsense or hangs, a handoff whose context was
cut short on the way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.fixtures.model_server import Reply, hang, status, text
from tools.chaos.cluster import Cluster

from handrail.bus import make_producer, make_reader
from handrail.recovery.rebuild import read_topic

log = logging.getLogger("chaos")

#: A worker frozen this long has long passed its Kafka session timeout (10 s by default): its
#: partitions move to the other replica, and it wakes up as a zombie in the middle of its work.
FREEZE_S = 30.0
#: How long a model misbehaves per fault.
MODEL_FAULT_S = 5.0
#: Nesting no recursive parser survives (RecursionError past ~1000).
POISON_DEPTH = 5000


@dataclass
class ModelFaults:
    """What the model server answers instead of the plan while a fault is on (None: the plan).

    A real provider's outage is rarely total: while a fault is on, each request gets it with
    probability ``share``, so the platform's retries, back-off and breakers all get their turn.
    """

    reply: Reply | None = None
    share: float = 0.5
    rng: random.Random = field(default_factory=random.Random)

    def wrap(self, respond: Callable[..., Reply]) -> Callable[..., Reply]:
        def responder(received: object) -> Reply:
            fault = self.reply
            if fault is not None and self.rng.random() < self.share:
                return fault
            return respond(received)

        return responder


@dataclass
class Injected:
    """A fault that happened: what, on what, when, and for how long."""

    kind: str
    target: str
    at_s: float
    took_s: float


@dataclass
class Faults:
    """Injects the faults on ``cluster``; ``injected`` lists what was done."""

    cluster: Cluster
    model: ModelFaults
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    injected: list[Injected] = field(default_factory=list)
    poison_keys: list[str] = field(default_factory=list)
    forged_tasks: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def kinds(self) -> dict[str, Callable[[], Awaitable[str]]]:
        return {
            "kill-service": self.kill_service,
            "freeze-worker": self.freeze_worker,
            "kill-kafka": self.kill_kafka,
            "kill-redis": self.kill_redis,
            "poison": self.poison,
            "model-fault": self.model_fault,
            "truncated-context": self.truncated_context,
        }

    def plan(self, count: int) -> list[str]:
        """``count`` faults, every kind at least once when ``count`` allows, in random order."""
        kinds = list(self.kinds())
        chosen = [kinds[i % len(kinds)] for i in range(count)]
        self.rng.shuffle(chosen)
        return chosen

    async def inject(self, kind: str) -> None:
        """Inject one fault and wait for it to end; a fault that cannot be recovered from is a failure."""
        began = time.monotonic()
        try:
            target = await self.kinds()[kind]()
        except Exception as exc:  # e.g. a service that did not come back healthy: a finding, not a crash
            log.exception("fault %s failed", kind)
            target = f"FAILED: {type(exc).__name__}: {exc}"
            self.failed.append(f"{kind}: {target}")
        done = Injected(kind, target, began - self.started, time.monotonic() - began)
        self.injected.append(done)
        log.info("fault %d: %s on %s (%.1fs)", len(self.injected), kind, target, done.took_s)

    async def kill_service(self) -> str:
        name = self.rng.choice(sorted(self.cluster.processes))
        await asyncio.to_thread(self.cluster.kill_service, name)
        return name

    async def freeze_worker(self) -> str:
        name = self.rng.choice(sorted(n for n in self.cluster.processes if n.startswith("worker-")))
        await asyncio.to_thread(self.cluster.freeze_service, name, FREEZE_S)
        return name

    async def kill_kafka(self) -> str:
        await asyncio.to_thread(self.cluster.kill_kafka)
        return "kafka"

    async def kill_redis(self) -> str:
        await asyncio.to_thread(self.cluster.kill_redis)
        return "redis"

    async def poison(self) -> str:
        topics = self.cluster.topics
        topic = self.rng.choice([topics.tasks, topics.steps, *(topics.agent(a) for a in self._agents())])
        key = f"chaos-poison-{len(self.poison_keys)}"
        self.poison_keys.append(key)
        body = ("[" * POISON_DEPTH + "]" * POISON_DEPTH).encode()
        await self._produce(topic, key, body)
        return topic

    async def model_fault(self) -> str:
        kind = self.rng.choice(["429", "500", "invalid-json", "hang"])
        self.model.reply = {
            "429": status(429, retry_after="1"),
            "500": status(500),
            "invalid-json": text('{"decision": "approved", "amount_usd": '),
            "hang": hang(),
        }[kind]
        try:
            await asyncio.sleep(MODEL_FAULT_S)
        finally:
            self.model.reply = None
        return f"model ({kind})"

    async def truncated_context(self) -> str:
        """Replay the latest handoff of some agent topic with a piece of its context cut off."""
        topics = self.cluster.topics
        agent = self.rng.choice(self._agents())
        latest = await self._latest(topics.agent(agent))
        if latest is None:
            return f"{topics.agent(agent)} (empty: nothing to truncate)"
        key, envelope = latest
        context = envelope.get("context", {})
        if isinstance(context, dict) and context:
            context.pop(sorted(context)[-1])
        envelope["message_id"] = f"{envelope.get('message_id', 'x')}-truncated"
        self.forged_tasks.append(key)
        await self._produce(topics.agent(agent), key, json.dumps(envelope).encode())
        return f"{topics.agent(agent)} (task {key})"

    def _agents(self) -> list[str]:
        return sorted(self.cluster.contracts.agents) if self.cluster.contracts else []

    async def _latest(self, topic: str) -> tuple[str, dict[str, object]] | None:
        reader = make_reader(self.cluster.bootstrap, "chaos-reader")
        await reader.start()
        found: tuple[str, dict[str, object]] | None = None
        try:
            async for record in read_topic(reader, topic):
                try:
                    envelope = json.loads(record.value or b"")
                except (ValueError, RecursionError):  # a poison message injected before: not a handoff
                    continue
                if record.key and isinstance(envelope, dict) and isinstance(envelope.get("context"), dict):
                    found = (record.key.decode(), envelope)
        finally:
            await reader.stop()
        return found

    async def _produce(self, topic: str, key: str, value: bytes) -> None:
        producer = make_producer(self.cluster.bootstrap, "chaos-faults")
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key.encode())
        finally:
            await producer.stop()
