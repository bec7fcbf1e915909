"""The dependency probe: /healthz and the handrail_dependency_up gauge say the same."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from handrail.service.probes import DependencyProbe, probe


class Broker:
    def __init__(self, up: bool) -> None:
        self.up = up

    async def ping(self, timeout: float | None) -> bool:  # noqa: ASYNC109 - FastStream's signature
        return self.up


class Redis:
    def __init__(self, answer: bool | Exception) -> None:
        self.answer = answer
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def up(dependency: str) -> float | None:
    return REGISTRY.get_sample_value("handrail_dependency_up", {"dependency": dependency})


async def test_a_probe_sets_the_gauge_for_each_dependency() -> None:
    seen = await probe(Broker(True), Redis(True), timeout_s=1)
    assert seen.ok and up("kafka") == 1 and up("redis") == 1
    seen = await probe(Broker(True), Redis(ConnectionError("refused")), timeout_s=1)
    assert not seen.ok and seen.kafka and up("kafka") == 1 and up("redis") == 0
    seen = await probe(Broker(False), Redis(True), timeout_s=1)
    assert not seen.ok and up("kafka") == 0 and up("redis") == 1


async def test_the_background_probe_follows_a_dependency_going_away() -> None:
    redis = Redis(True)
    running = DependencyProbe(Broker(True), redis, timeout_s=1, interval_s=0.01)
    await running.start()
    try:
        assert up("redis") == 1
        redis.answer = ConnectionError("gone")
        for _ in range(200):
            if up("redis") == 0:
                break
            await asyncio.sleep(0.01)
        assert up("redis") == 0 and redis.pings >= 2
    finally:
        await running.stop()
    pings = redis.pings
    await asyncio.sleep(0.05)
    assert redis.pings == pings  # stopped
