"""A small Python client: publish tasks, await their results, follow their progress.

async with HandrailClient("127.0.0.1:9092") as client:   # credentials=SaslCredentials(...) on a SASL cluster
    task_id = await client.submit("expense-approval", {"employee_id": "E100", ...})
    result = await client.wait_for_result(task_id, timeout_s=30)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from handrail.bus.broker import make_producer, make_reader, partitions_of
from handrail.bus.security import SaslCredentials
from handrail.errors import HandrailError
from handrail.messages import TaskResult, TaskSubmitted
from handrail.topics import Topics

#: Results of other tasks a client keeps while it waits for one; the oldest go first.
_MAX_KEPT_RESULTS = 10_000


class BrokerUnreachable(HandrailError):
    """Kafka could not be reached at the configured address."""


class ResultTimeout(HandrailError):
    """No result arrived for the task within the time allowed."""


class HandrailClient:
    """Publishes ``TaskSubmitted`` and reads ``TaskResult`` back."""

    def __init__(
        self, bootstrap: str, topic_prefix: str = "handrail.", *, credentials: SaslCredentials | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.credentials = credentials
        self.topics = Topics(topic_prefix)
        self._producer: AIOKafkaProducer | None = None
        self._results: AIOKafkaConsumer | None = None
        # Results read while waiting for another task, kept for whoever asks next.
        self._seen: dict[str, TaskResult] = {}

    async def __aenter__(self) -> HandrailClient:
        self._producer = make_producer(self.bootstrap, "handrail-client", self.credentials)
        try:
            await self._producer.start()
        except KafkaConnectionError as exc:
            await self._producer.stop()
            raise BrokerUnreachable(f"cannot reach Kafka at {self.bootstrap}: {exc}") from None
        # Follow results from now on, before anything is submitted, so no result can slip by.
        self._results = await self._consumer_at(self.topics.results, from_time_ms=None)
        return self

    async def __aexit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | Any) -> None:
        if self._results is not None:
            await self._results.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def submit(
        self,
        workflow: str,
        task_input: dict[str, Any],
        *,
        task_id: str | None = None,
        submitted_by: str | None = None,
        deadline_s: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Publish a task and return its id (a fresh uuid unless ``task_id`` is given)."""
        task = TaskSubmitted(
            task_id=task_id or str(uuid.uuid4()),
            workflow=workflow,
            input=task_input,
            submitted_by=submitted_by,
            deadline_s=deadline_s,
            metadata=metadata or {},
        )
        await self.publish_raw(task.to_bytes(), key=task.task_id)
        return task.task_id

    async def publish_raw(self, value: bytes, *, key: str | None) -> None:
        """Publish bytes as they are on the tasks topic (for tools and tests of bad input)."""
        assert self._producer is not None, "use the client as an async context manager"
        await self._producer.send_and_wait(self.topics.tasks, value, key=key.encode() if key else None)

    async def wait_for_result(self, task_id: str, timeout_s: float = 60.0) -> TaskResult:
        """Wait for the task's ``TaskResult`` (published after this client started)."""
        assert self._results is not None, "use the client as an async context manager"
        deadline = time.monotonic() + timeout_s
        while task_id not in self._seen and (left := deadline - time.monotonic()) > 0:
            batch = await self._results.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batch.values():
                for record in records:
                    result = TaskResult.model_validate_json(record.value or b"")
                    self._seen.setdefault(result.task_id, result)
                    if len(self._seen) > _MAX_KEPT_RESULTS:
                        self._seen.pop(next(iter(self._seen)))
        if task_id in self._seen:
            return self._seen[task_id]
        raise ResultTimeout(f"no result for task {task_id} within {timeout_s:g}s")

    async def _consumer_at(self, topic: str, from_time_ms: int | None) -> AIOKafkaConsumer:
        return await open_reader(self.bootstrap, [topic], from_time_ms, self.credentials)


async def open_reader(
    bootstrap: str, topics: list[str], from_time_ms: int | None, credentials: SaslCredentials | None = None
) -> AIOKafkaConsumer:
    """A group-less consumer over every partition of ``topics``, at ``from_time_ms`` (None: the end)."""
    consumer = make_reader(bootstrap, "handrail-client", credentials)
    try:
        await consumer.start()
    except KafkaConnectionError as exc:
        await consumer.stop()
        raise BrokerUnreachable(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        partitions: list[TopicPartition] = []
        for topic in topics:
            partitions += [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(partitions)
        if from_time_ms is None:
            await consumer.seek_to_end(*partitions)
        else:
            offsets = await consumer.offsets_for_times({tp: from_time_ms for tp in partitions})
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                found = offsets.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        for tp in partitions:
            await consumer.position(tp)  # resolve positions now, not on the first fetch
    except KafkaError:
        await consumer.stop()
        raise
    return consumer


async def follow(consumer: AIOKafkaConsumer, idle_timeout_s: float) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Yield records as they arrive; stop after ``idle_timeout_s`` without one."""
    while True:
        batch = await consumer.getmany(timeout_ms=int(idle_timeout_s * 1000))
        if not batch:
            return
        records = sorted((r for rs in batch.values() for r in rs), key=lambda r: r.timestamp)
        for record in records:
            yield record
        await asyncio.sleep(0)


#: ``read_to_end`` gives up when a fetch brings nothing for this long while records are still due.
_READ_STALL_S = 30.0


async def read_to_end(consumer: AIOKafkaConsumer) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Yield every record from the consumer's positions up to each partition's end as of the call, then stop.

    Unlike :func:`follow`, a pause between fetches does not end it early: what was there is all read,
    so it can be counted.
    """
    partitions = list(consumer.assignment())
    ends = await consumer.end_offsets(partitions)
    due = [tp for tp in partitions if await consumer.position(tp) < ends[tp]]
    while due:
        batch = await consumer.getmany(*due, timeout_ms=int(_READ_STALL_S * 1000))
        if not batch:
            where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in due)
            raise HandrailError(f"reading {where} stalled: nothing arrived for {_READ_STALL_S:g}s")
        for tp, records in batch.items():
            for record in records:
                if record.offset < ends[tp]:
                    yield record
        due = [tp for tp in due if await consumer.position(tp) < ends[tp]]
