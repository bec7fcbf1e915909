"""The review service judges the graduation rule continuously, from the review topics on real Kafka.

With ``auto: true`` it applies what the rule recommends (audited as the service,
once however many replicas judge at once); with ``auto: false`` it only says so
in its metrics. The count starts again at every change of level.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from tests.fixtures.reviews import reviews

from handrail.audit import AuditLog, AuditRecord
from handrail.audit.reader import read_key
from handrail.autonomy import AutonomyLevels, Outcome, Recorder
from handrail.autonomy.measure import REVIEW_SERVICE, final_record_id
from handrail.bus import Publisher, make_reader
from handrail.bus.broker import make_broker, make_producer
from handrail.contracts import Autonomy, GraduationRule, load_contracts
from handrail.contracts.graduation import Demotion, Promotion
from handrail.messages import ReviewRequested
from handrail.state import generation
from handrail.tools import default_registry
from handrail.topics import Topics, ensure_topics
from handrail_dev import services
from handrail_review import handlers, outcomes
from handrail_review.autonomy import AutonomyWatch

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONTRACTS = load_contracts(PROJECT_ROOT / "config", default_registry().names())
A, W = "expense-approver", "expense-approval"
KEY = f"autonomy/{A}/{W}"
EXCEPTIONS, AUDIT = Autonomy.EXCEPTION_BASED, Autonomy.AUDIT_BASED
RULE = GraduationRule(
    auto=True,
    window_reviews=50,
    promote={EXCEPTIONS: Promotion(min_reviews=4, min_approved_unchanged_ratio=0.75)},
    demote=Demotion(min_reviews=3, max_rejected_ratio=0.5),
)

pytestmark = [pytest.mark.bus, pytest.mark.timeout(180)]


def test_the_measure_reads_the_records_the_service_writes() -> None:
    assert final_record_id("r-1", 2) == outcomes.final_record_id("r-1", 2)
    assert handlers.ACTOR == REVIEW_SERVICE


@dataclass
class Bus:
    bootstrap: str
    redis: aioredis.Redis
    prefix: str
    topics: Topics
    recorder: Recorder

    def watch(self, rule: GraduationRule) -> AutonomyWatch:
        levels = AutonomyLevels(self.redis, self.prefix, dataclasses.replace(CONTRACTS, graduation=rule), ttl_s=0.0)
        return AutonomyWatch(
            levels,
            self.recorder,
            self.topics,
            lambda: make_reader(self.bootstrap, "test-autonomy-watch"),
            interval_s=0.2,
            backoff_s=0.2,
        )

    async def publish_reviews(self, outcomes: dict[Outcome, int]) -> None:
        producer = make_producer(self.bootstrap, "test-reviews")
        await producer.start()
        try:
            for record in reviews(A, W, outcomes):
                requested = isinstance(record, ReviewRequested)
                topic = self.topics.reviews_requested if requested else self.topics.reviews_decided
                await producer.send_and_wait(topic, record.to_bytes(), key=record.task_id.encode())
        finally:
            await producer.stop()

    async def audit(self) -> list[AuditRecord]:
        return [
            AuditRecord.model_validate_json(v) for _, _, v in await read_key(self.bootstrap, self.topics.audit, KEY)
        ]


@pytest.fixture
async def bus(kafka_bootstrap: str, state_redis: aioredis.Redis) -> AsyncIterator[Bus]:
    run = uuid.uuid4().hex[:10]
    topics, prefix = Topics(f"t{run}."), f"t{run}:"
    await ensure_topics(kafka_bootstrap, topics.specs(CONTRACTS.agents))
    await generation.stamp(state_redis, prefix)
    broker = make_broker(kafka_bootstrap, client_id="test-autonomy-watch")
    await broker.connect()
    publisher = Publisher(broker)
    try:
        yield Bus(
            kafka_bootstrap,
            state_redis,
            prefix,
            topics,
            Recorder(publisher, topics.control, AuditLog(state_redis, publisher, topics.audit, prefix)),
        )
    finally:
        await broker.stop()


@contextlib.asynccontextmanager
async def running(*watches: AutonomyWatch) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(w.run()) for w in watches]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not true within {timeout_s}s: {check.__qualname__}")


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"agent": A, "workflow": W, **labels})


async def test_auto_promotes_once_across_replicas_then_counts_again_and_demotes(bus: Bus) -> None:
    levels = AutonomyLevels(bus.redis, bus.prefix, CONTRACTS, ttl_s=0.0)
    await bus.publish_reviews({Outcome.APPROVED_UNCHANGED: 3, Outcome.EDITED: 1})

    async def level_is(wanted: Autonomy) -> bool:
        return await levels.level(A, W) == wanted

    async with running(bus.watch(RULE), bus.watch(RULE)):  # two replicas judging at once
        await eventually(lambda: level_is(AUDIT))
        await asyncio.sleep(1.0)  # several more rounds: the new level's count starts empty, so it holds
        assert await levels.level(A, W) == AUDIT
        audit = await bus.audit()
        assert [(r.action, r.actor) for r in audit] == [("autonomy.changed", REVIEW_SERVICE)], "one change"
        details = audit[0].details
        assert (details["from"], details["to"], details["auto"]) == ("exception-based", "audit-based", True)
        assert details["evidence"]["reviews"] == 4 and details["evidence"]["approved_unchanged_ratio"] == 0.75
        assert "approved unchanged 75.0% of 4 reviews" in (audit[0].reason or "")
        assert gauge("handrail_autonomy_level") == 2
        assert gauge("handrail_autonomy_reviews") == 0 and gauge("handrail_autonomy_recommendation") == 0

        # Reviews requested since the change: two of three rejected, above the 50 % maximum.
        await bus.publish_reviews({Outcome.REJECTED: 2, Outcome.APPROVED_UNCHANGED: 1})
        await eventually(lambda: level_is(EXCEPTIONS))
    audit = await bus.audit()
    assert [(r.details["from"], r.details["to"]) for r in audit] == [
        ("exception-based", "audit-based"),
        ("audit-based", "exception-based"),
    ]
    assert "rejected 66.7% > 50.0% of 3 reviews" in (audit[1].reason or "")
    assert (await levels.current(A, W)).source == "override"


async def test_without_auto_the_rule_only_recommends(bus: Bus) -> None:
    await bus.publish_reviews({Outcome.APPROVED_UNCHANGED: 4, Outcome.TIMED_OUT: 1})
    watch = bus.watch(RULE.model_copy(update={"auto": False}))
    async with running(watch):
        await asyncio.wait_for(watch.ready.wait(), 30)
        found = await watch.evaluate()
    judged = next(f for f in found if (f.effective.agent, f.effective.workflow) == (A, W))
    assert (judged.recommendation.action, judged.recommendation.level) == ("promote", AUDIT)
    assert judged.counts.reviews == 5
    assert gauge("handrail_autonomy_recommendation") == 1 and gauge("handrail_autonomy_reviews") == 5
    assert gauge("handrail_autonomy_outcome_ratio", outcome="timed_out") == 0.2
    assert gauge("handrail_autonomy_level") == 1
    levels = AutonomyLevels(bus.redis, bus.prefix, CONTRACTS)
    assert await levels.level(A, W) == EXCEPTIONS and await bus.audit() == []


async def test_a_change_on_kafka_that_redis_missed_is_stored_by_the_watch(bus: Bus) -> None:
    writer = AutonomyLevels(bus.redis, bus.prefix, CONTRACTS)
    change = await writer.set(A, W, AUDIT, by="operator:ana", reason="r", recorder=bus.recorder)
    await bus.redis.delete(writer.key(A, W))  # as if the writer died between publishing and storing
    assert await writer.level(A, W) == AUDIT, "cached in the writer"
    fresh = AutonomyLevels(bus.redis, bus.prefix, CONTRACTS)
    assert await fresh.level(A, W) == EXCEPTIONS
    watch = bus.watch(RULE.model_copy(update={"auto": False}))
    async with running(watch):
        await asyncio.wait_for(watch.ready.wait(), 30)
    assert (await fresh.current(A, W)).latest == change


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def review_service(bus: Bus, redis_url: str, tmp_path: Path) -> Iterator[services.ServiceProcess]:
    """The human-review service as a process, with a rule that applies itself after 4 clean reviews."""
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    (config / "autonomy.yaml").write_text(
        "auto: true\npromote:\n  exception-based: {min_reviews: 4, min_approved_unchanged_ratio: 1.0}\n"
    )
    planned = next(p for p in services.plan([]) if p.name == "human-review")
    process = dataclasses.replace(planned, http_port=free_port())
    env = {
        "HANDRAIL_KAFKA_BOOTSTRAP": bus.bootstrap,
        "HANDRAIL_REDIS_URL": redis_url,
        "HANDRAIL_TOPIC_PREFIX": bus.topics.prefix,
        "HANDRAIL_REDIS_PREFIX": bus.prefix,
        "HANDRAIL_GROUP_PREFIX": bus.prefix.replace(":", "-"),
        "HANDRAIL_CONFIG_DIR": str(config),
        "HANDRAIL_AUTONOMY_INTERVAL_S": "0.2",
    }
    run_dir = tmp_path / "run"
    services.start(process, run_dir, env, PROJECT_ROOT)
    try:
        services.wait_ready(process, run_dir)
        yield process
    finally:
        services.stop_process(process, run_dir)


async def test_the_service_applies_the_rule_and_exports_the_measure(
    bus: Bus, review_service: services.ServiceProcess
) -> None:
    levels = AutonomyLevels(bus.redis, bus.prefix, CONTRACTS, ttl_s=0.0)
    await bus.publish_reviews({Outcome.APPROVED_UNCHANGED: 4})

    async def promoted() -> bool:
        return await levels.level(A, W) == AUDIT

    await eventually(promoted)
    [record] = await bus.audit()
    assert (record.actor, record.action, record.details["auto"]) == (REVIEW_SERVICE, "autonomy.changed", True)
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{review_service.http_port}/metrics", timeout=5)).text
    assert f'handrail_autonomy_changes_total{{action="promote",agent="{A}",workflow="{W}"}} 1.0' in metrics
    assert f'handrail_autonomy_level{{agent="{A}",workflow="{W}"}} 2.0' in metrics
