"""Reading one task's messages back from a topic: only the partition its key maps to."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from handrail.bus.broker import make_reader, partitions_of
from handrail.bus.security import SaslCredentials
from handrail.client import BrokerUnreachable
from handrail.errors import HandrailError

#: Stop reading once the partition's end (as of the start of the read) is reached, or after this long.
_READ_TIMEOUT_S = 30.0


async def read_key(
    bootstrap: str, topic: str, key: str, credentials: SaslCredentials | None = None
) -> list[tuple[int, int, bytes]]:
    """Every (offset, timestamp_ms, value) keyed ``key`` on ``topic``, in log order.

    Producers place a key by murmur2 over all partitions (Kafka's default), so
    only that partition is read, from its start to its current end.
    """
    from aiokafka.errors import KafkaConnectionError

    consumer = make_reader(bootstrap, "handrail-audit-reader", credentials)
    try:
        await consumer.start()
    except KafkaConnectionError as exc:
        await consumer.stop()
        raise BrokerUnreachable(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        partitions = await partitions_of(consumer, topic)
        partition = DefaultPartitioner()(key.encode(), partitions, partitions)
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[tuple[int, int, bytes]] = []
        position = await consumer.position(tp)
        while position < end:
            batch = await consumer.getmany(tp, timeout_ms=int(_READ_TIMEOUT_S * 1000))
            if not batch:
                raise HandrailError(f"reading {topic}[{partition}] stalled at offset {position} of {end}")
            for record in batch.get(tp, []):
                if record.key == key.encode():
                    found.append((record.offset, record.timestamp, record.value or b""))
            position = await consumer.position(tp)
        return found
    finally:
        await consumer.stop()
