"""Whether Kafka and Redis answer: for ``/healthz``, and in the background for ``handrail_dependency_up``.

A probe that only ran when someone asked ``/healthz`` would leave Prometheus blind between
restarts, so each service also probes on its own, every ``interval_s``, and the gauge says
what the last probe saw: an alert on it fires while the service itself still serves /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from handrail.metrics import DEPENDENCY_UP

#: Prometheus scrapes every 10 s (deploy/prometheus/prometheus.yml): probing as often keeps the gauge current.
PROBE_INTERVAL_S = 10.0

log = logging.getLogger(__name__)


class _Broker(Protocol):
    async def ping(self, timeout: float | None) -> bool: ...  # noqa: ASYNC109 - FastStream's signature


class _Redis(Protocol):
    def ping(self) -> object: ...


@dataclass(frozen=True)
class Reachability:
    """What one probe saw."""

    kafka: bool
    redis: bool

    @property
    def ok(self) -> bool:
        return self.kafka and self.redis


async def probe(broker: _Broker, redis: _Redis, timeout_s: float) -> Reachability:
    """Ping both (each within ``timeout_s``) and set ``handrail_dependency_up``."""
    try:
        kafka_ok = await broker.ping(timeout_s)
    except Exception:
        kafka_ok = False
    try:
        redis_ok = bool(await asyncio.wait_for(redis.ping(), timeout_s))  # type: ignore[arg-type]
    except Exception:
        redis_ok = False
    DEPENDENCY_UP.labels("kafka").set(int(kafka_ok))
    DEPENDENCY_UP.labels("redis").set(int(redis_ok))
    return Reachability(kafka=kafka_ok, redis=redis_ok)


class DependencyProbe:
    """Probes Kafka and Redis every ``interval_s`` until stopped."""

    def __init__(
        self, broker: _Broker, redis: _Redis, *, timeout_s: float, interval_s: float = PROBE_INTERVAL_S
    ) -> None:
        self._broker = broker
        self._redis = redis
        self._timeout_s = timeout_s
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Probe once now, then in the background."""
        await probe(self._broker, self._redis, self._timeout_s)
        self._task = asyncio.create_task(self._run(), name="dependency-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            seen = await probe(self._broker, self._redis, self._timeout_s)
            if not seen.ok:
                log.warning("dependency probe: kafka %s, redis %s", _word(seen.kafka), _word(seen.redis))


def _word(up: bool) -> str:
    return "answers" if up else "does not answer"
