"""The dev infrastructure on real servers: Kafka groups and transactions, Redis, the launcher."""

from __future__ import annotations

import shutil
import socket
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tests.fixtures.infra import TopicFactory, unavailable

from handrail_dev import DevSettings, ServiceState, down, status, up

pytestmark = pytest.mark.timeout(60)

_ANSWERING = {ServiceState.RUNNING, ServiceState.EXTERNAL}


async def _read(consumer: AIOKafkaConsumer, count: int) -> list[bytes]:
    values: list[bytes] = []
    while len(values) < count:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            values.extend(record.value or b"" for record in records)
    return values


@pytest.mark.asyncio
async def test_consumer_group_commits_offsets(kafka_bootstrap: str, new_topic: TopicFactory) -> None:
    topic = await new_topic()
    group = f"group-{uuid.uuid4().hex}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in (b"m0", b"m1", b"m2"):
            await producer.send_and_wait(topic, value)
        first = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        await first.start()
        try:
            assert await _read(first, 3) == [b"m0", b"m1", b"m2"]
            await first.commit()
            assert await first.committed(TopicPartition(topic, 0)) == 3
        finally:
            await first.stop()

        await producer.send_and_wait(topic, b"m3")
        # A new member of the same group resumes after the committed offset.
        second = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        await second.start()
        try:
            assert await _read(second, 1) == [b"m3"]
        finally:
            await second.stop()
    finally:
        await producer.stop()


@pytest.mark.asyncio
async def test_read_committed_sees_committed_transactions_only(kafka_bootstrap: str, new_topic: TopicFactory) -> None:
    topic = await new_topic()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"tx-{uuid.uuid4().hex}")
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"committed")
        await producer.commit_transaction()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, isolation_level="read_committed", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        assert await _read(consumer, 1) == [b"committed"]
    finally:
        await consumer.stop()


@pytest.mark.asyncio
async def test_redis_answers_ping(redis_client: aioredis.Redis) -> None:
    key = f"test:{uuid.uuid4().hex}"
    assert await redis_client.ping()
    await redis_client.set(key, b"v", ex=60)
    assert await redis_client.get(key) == b"v"


def test_up_twice_starts_nothing(dev_settings: DevSettings) -> None:
    first = up(dev_settings)
    second = up(dev_settings)
    for before, after in zip(first.services, second.services, strict=True):
        assert after.state in _ANSWERING
        assert (after.state, after.pid, after.changed) == (before.state, before.pid, False)


def test_status_tells_ours_from_external(dev_settings: DevSettings, tmp_path: Path) -> None:
    ours = status(dev_settings)
    for svc in ours.services:
        assert svc.state in _ANSWERING
        assert (svc.pid is not None) == (svc.state is ServiceState.RUNNING)
    # Same addresses, but no pid files in this run dir: the servers are someone else's.
    elsewhere = dev_settings.model_copy(update={"run_dir": tmp_path})
    assert [s.state for s in status(elsewhere).services] == [ServiceState.EXTERNAL] * 2
    assert not any(s.changed for s in down(elsewhere).services)
    assert [s.state for s in status(dev_settings).services] == [s.state for s in ours.services]


def _free_port_pair() -> int:
    """A port P with P and P + 1 free (Kafka's broker and controller ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")


@pytest.mark.timeout(240)
def test_launcher_lifecycle_restarts_on_formatted_storage(tmp_path: Path) -> None:
    if not (shutil.which("java") and shutil.which("mvn") and shutil.which("redis-server")):
        unavailable("the launcher needs java, mvn and redis-server on PATH")
    kafka_port, redis_port = _free_port_pair(), _free_port_pair()
    settings = DevSettings(
        run_dir=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        kafka_heap_mb=256,
    )
    try:
        assert [s.state for s in status(settings).services] == [ServiceState.STOPPED] * 2
        started = up(settings)
        assert all(s.state is ServiceState.RUNNING and s.changed for s in started.services)
        assert [s.pid for s in status(settings).services] == [s.pid for s in started.services]
        stopped = down(settings)
        assert all(s.state is ServiceState.STOPPED and s.changed for s in stopped.services)
        assert [s.state for s in status(settings).services] == [ServiceState.STOPPED] * 2
        # The second start reuses the formatted storage (no re-format).
        assert (tmp_path / "kafka" / "data" / "meta.properties").is_file()
        restarted = up(settings)
        assert all(s.state is ServiceState.RUNNING and s.changed for s in restarted.services)
    finally:
        down(settings)
