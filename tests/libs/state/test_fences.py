"""Fencing tokens: each new owner of a partition makes every earlier owner's token stale."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer, TopicPartition
from tests.fixtures.infra import TopicFactory

from handrail.bus import make_consumer
from handrail.bus.consumer import ConcurrentConsumer
from handrail.bus.delivery import Delivery
from handrail.state.fences import Fences

pytestmark = [pytest.mark.bus, pytest.mark.timeout(120)]


async def test_a_new_owner_makes_the_old_token_stale(state_redis: aioredis.Redis) -> None:
    fences = Fences(state_redis, f"t{uuid.uuid4().hex[:8]}:")
    old = await fences.claim("g", "topic", 3)
    assert await fences.holds("g", "topic", 3, old)
    new = await fences.claim("g", "topic", 3)
    assert not await fences.holds("g", "topic", 3, old), "the woken owner must find itself fenced"
    assert await fences.holds("g", "topic", 3, new)
    assert await fences.holds("g", "topic", 4, old), "another partition has its own owner"
    assert await fences.holds("other-group", "topic", 3, old), "and another group its own"


async def test_tokens_lost_with_redis_leave_the_partition_unfenced(state_redis: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    fences = Fences(state_redis, prefix)
    token = await fences.claim("g", "topic", 0)
    await state_redis.delete(fences.key("g", "topic", 0))
    assert await fences.holds("g", "topic", 0, token)


async def test_every_delivery_carries_the_token_its_partition_was_claimed_with(
    kafka_bootstrap: str, new_topic: TopicFactory, state_redis: aioredis.Redis
) -> None:
    topic, group = await new_topic(partitions=2), f"g-{uuid.uuid4().hex[:8]}"
    fences = Fences(state_redis, f"t{uuid.uuid4().hex[:8]}:")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topic, b"x", key=f"k{n}".encode())
    finally:
        await producer.stop()
    seen: list[Delivery] = []

    async def record(delivery: Delivery, attempt: int) -> None:
        seen.append(delivery)

    async def claim(tp: TopicPartition) -> str:
        return await fences.claim(group, tp.topic, tp.partition)

    consumer = ConcurrentConsumer(
        lambda: make_consumer(kafka_bootstrap, group, "test"),
        [topic],
        record,
        name="test",
        max_in_flight=16,
        retry_backoff_s=0.05,
        shutdown_grace_s=5,
        claim=claim,
    )
    await consumer.start()
    try:
        for _ in range(600):
            if len(seen) >= 10:
                break
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
    assert len(seen) == 10
    for delivery in seen:
        assert delivery.fence is not None
        assert await fences.holds(group, topic, delivery.partition, delivery.fence)
    assert len({d.fence for d in seen}) == len({d.partition for d in seen}), "one token per partition"
