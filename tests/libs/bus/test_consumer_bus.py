"""The concurrent consumer on real Kafka: many messages at once, each key in order, nothing lost."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY
from tests.fixtures.infra import TopicFactory

from handrail.bus import make_consumer
from handrail.bus.consumer import Claim, ConcurrentConsumer
from handrail.bus.delivery import Delivery

pytestmark = [pytest.mark.bus, pytest.mark.timeout(120)]

KEYS = 30
PER_KEY = 10


async def produce(bootstrap: str, topic: str) -> None:
    """``PER_KEY`` numbered messages for each of ``KEYS`` keys, interleaved."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sends = [
            await producer.send(topic, str(n).encode(), key=f"k{k}".encode())
            for n in range(PER_KEY)
            for k in range(KEYS)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


class Recorder:
    """What a handler saw, per key, and how many ran at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.seen: dict[str, list[int]] = defaultdict(list)
        self.running: set[str] = set()
        self.peak = 0
        self.overlaps: list[str] = []  # a raise would only be retried: overlaps are kept and asserted

    async def __call__(self, delivery: Delivery, attempt: int) -> None:
        key = delivery.key or ""
        if key in self.running:
            self.overlaps.append(key)
        self.running.add(key)
        self.peak = max(self.peak, len(self.running))
        try:
            await asyncio.sleep(self.delay_s)
            self.seen[key].append(int(delivery.value))
        finally:
            self.running.discard(key)
        assert not self.overlaps

    def complete(self) -> bool:
        assert not self.overlaps, f"two messages of one key ran at once: {self.overlaps}"
        return len(self.seen) == KEYS and all(set(s) == set(range(PER_KEY)) for s in self.seen.values())


def consumer(
    bootstrap: str, topic: str, group: str, record: Recorder, max_in_flight: int = 256, claim: Claim | None = None
) -> ConcurrentConsumer:
    return ConcurrentConsumer(
        lambda: make_consumer(bootstrap, group, "test"),
        [topic],
        record,
        name="test",
        max_in_flight=max_in_flight,
        retry_backoff_s=0.05,
        shutdown_grace_s=10,
        claim=claim,
    )


async def wait_until(check: object, timeout_s: float = 60) -> None:
    for _ in range(int(timeout_s * 20)):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def committed(bootstrap: str, topic: str, group: str, partitions: int) -> int:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        return sum([await reader.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)])
    finally:
        await reader.stop()


def in_order(seen: list[int]) -> bool:
    """Each key's messages ran in order; a redelivery may repeat a suffix, never run one early."""
    firsts = list(dict.fromkeys(seen))
    return firsts == sorted(firsts)


async def test_many_keys_run_at_once_each_in_order_and_all_is_committed(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = await new_topic(3)
    group = f"g-{uuid.uuid4().hex}"
    await produce(kafka_bootstrap, topic)
    record = Recorder(delay_s=0.05)
    running = consumer(kafka_bootstrap, topic, group, record)
    await running.start()
    try:
        await wait_until(record.complete)
    finally:
        await running.stop()
    assert record.peak == KEYS  # every key at once: none waited for another
    assert all(s == list(range(PER_KEY)) for s in record.seen.values())
    assert await committed(kafka_bootstrap, topic, group, 3) == KEYS * PER_KEY


async def test_records_fetched_while_partitions_are_still_being_claimed_are_not_lost(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    """Fencing claims each assigned partition in Redis; aiokafka fetches meanwhile (a slow Redis: seconds)."""
    topic = await new_topic(6)
    await produce(kafka_bootstrap, topic)  # already there: the first fetch returns records at once
    claimed: list[int] = []

    async def slow_claim(tp: TopicPartition) -> str:
        await asyncio.sleep(0.3)
        claimed.append(tp.partition)
        return f"token-{tp.partition}"

    record = Recorder(delay_s=0.0)
    running = consumer(kafka_bootstrap, topic, f"g-{uuid.uuid4().hex}", record, claim=slow_claim)
    await running.start()
    try:
        await wait_until(record.complete, timeout_s=30)
    finally:
        await running.stop()
    assert sorted(claimed) == list(range(6))
    assert all(s == list(range(PER_KEY)) for s in record.seen.values())


async def test_the_cap_bounds_what_is_in_flight(kafka_bootstrap: str, new_topic: TopicFactory) -> None:
    topic = await new_topic(3)
    await produce(kafka_bootstrap, topic)
    record = Recorder(delay_s=0.02)
    running = consumer(kafka_bootstrap, topic, f"g-{uuid.uuid4().hex}", record, max_in_flight=8)
    await running.start()
    try:
        await wait_until(record.complete)
    finally:
        await running.stop()
    assert running.peak_in_flight <= 8 and record.peak <= 8
    assert all(s == list(range(PER_KEY)) for s in record.seen.values())


async def test_a_consumer_killed_mid_batch_loses_nothing(kafka_bootstrap: str, new_topic: TopicFactory) -> None:
    """Killed with messages in flight and none of them committed: the next consumer of the group redoes them."""
    topic = await new_topic(3)
    group = f"g-{uuid.uuid4().hex}"
    await produce(kafka_bootstrap, topic)
    first = Recorder(delay_s=0.2)
    doomed = consumer(kafka_bootstrap, topic, group, first)
    await doomed.start()
    await wait_until(lambda: sum(map(len, first.seen.values())) >= 30)
    # As SIGKILL would: no drain, no commit, the group connection simply dropped.
    assert doomed._loop_task is not None and doomed._consumer is not None
    doomed._loop_task.cancel()
    await doomed.scheduler.drain(0)
    await doomed._consumer.stop()

    second = Recorder(delay_s=0.0)
    survivor = consumer(kafka_bootstrap, topic, group, second)
    await survivor.start()
    try:
        await wait_until(
            lambda: all(
                set(first.seen.get(f"k{k}", [])) | set(second.seen.get(f"k{k}", [])) == set(range(PER_KEY))
                for k in range(KEYS)
            )
        )
    finally:
        await survivor.stop()
    for k in range(KEYS):
        key = f"k{k}"
        assert in_order(first.seen.get(key, []) + second.seen.get(key, []))
    assert await committed(kafka_bootstrap, topic, group, 3) == KEYS * PER_KEY


async def test_a_rebalance_while_messages_run_keeps_each_key_in_order(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = await new_topic(4)
    group = f"g-{uuid.uuid4().hex}"
    await produce(kafka_bootstrap, topic)
    shared = Recorder(delay_s=0.1)  # one recorder: together the two consumers must see every message
    a = consumer(kafka_bootstrap, topic, group, shared)
    b = consumer(kafka_bootstrap, topic, group, shared)
    await a.start()
    await wait_until(lambda: sum(map(len, shared.seen.values())) >= 20)
    await b.start()  # joins while a has messages in flight: the group rebalances
    try:
        await wait_until(shared.complete)
    finally:
        await a.stop()
        await b.stop()
    assert all(in_order(s) for s in shared.seen.values())
    assert await committed(kafka_bootstrap, topic, group, 4) == KEYS * PER_KEY


async def test_the_lag_gauge_counts_what_is_not_finished_and_falls_to_zero(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    """``handrail_consumer_lag_messages``: the high watermark minus the lowest unfinished offset, per topic."""
    topic = await new_topic(3)
    await produce(kafka_bootstrap, topic)
    gate = asyncio.Event()

    async def held(delivery: Delivery, attempt: int) -> None:
        await gate.wait()

    name = f"lag-{uuid.uuid4().hex[:8]}"
    running = ConcurrentConsumer(
        lambda: make_consumer(kafka_bootstrap, f"g-{uuid.uuid4().hex}", "test"),
        [topic],
        held,
        name=name,
        max_in_flight=8,
        retry_backoff_s=0.05,
        shutdown_grace_s=10,
    )

    def lag() -> float:
        return REGISTRY.get_sample_value("handrail_consumer_lag_messages", {"consumer": name, "topic": topic}) or 0.0

    await running.start()
    try:
        await wait_until(lambda: lag() == KEYS * PER_KEY, timeout_s=30)  # nothing finished: all of it is behind
        gate.set()
        await wait_until(lambda: lag() == 0, timeout_s=30)
    finally:
        gate.set()
        await running.stop()
