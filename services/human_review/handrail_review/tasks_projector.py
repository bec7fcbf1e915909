"""Build the task console's index from ``audit`` and ``dlq``, then keep following (``tasks_index``).

Kafka is the record. Every replica reads both topics outside any consumer group and folds each
record into the shared index; a record applied twice changes nothing, so replicas may race and a
crash between applying and remembering the offset loses nothing. Where it got to is kept in Redis
with the state's generation: a restart goes on from there, and a Redis that lost its state (a new
generation, or no offsets) is refilled from the start of the topics. ``ready`` is set once the
topics are read to the end they had when reading started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import Counter
from pydantic import ValidationError

from handrail.audit import AuditRecord
from handrail.bus.broker import partitions_of
from handrail.errors import RetryableError
from handrail.messages import DeadLetter
from handrail_review import timeline
from handrail_review.tasks_index import TaskIndex

log = logging.getLogger(__name__)

R = TypeVar("R")

#: The audit topic is busy (several records per hop): large batches, few round trips.
_MAX_RECORDS = 2000
_POLL_MS = 200

RECORDS = Counter(
    "handrail_console_records_total", "Records the task console read from Kafka, by topic kind and outcome.",
    ["kind", "outcome"],
)  # fmt: skip


class TasksProjector:
    """Feeds ``audit`` and ``dlq`` into the task index; ``ready`` once caught up."""

    def __init__(
        self,
        make_reader: Callable[[], AIOKafkaConsumer],
        audit_topic: str,
        dlq_topic: str,
        index: TaskIndex,
        backoff_s: float,
        generation: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.make_reader = make_reader
        self.audit_topic = audit_topic
        self.dlq_topic = dlq_topic
        self.index = index
        self.backoff_s = backoff_s
        self.generation = generation
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Catch up, then follow, until cancelled; Kafka or Redis outages are waited out."""
        while True:
            try:
                consumer = await self._open()
            except Exception as exc:
                log.warning("task console: cannot read the audit and dead-letter topics yet: %s", exc)
                await asyncio.sleep(self.backoff_s)
                continue
            try:
                built_as = self.generation()
                await self._seek(consumer, built_as)
                await self._catch_up(consumer, built_as)
                self.ready.set()
                log.info("task index caught up with Kafka")
                while self.generation() == built_as:
                    batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
                    await self._apply_batch(consumer, batch, built_as)
                self.ready.clear()
                log.warning("task console: the state was rebuilt (generation %s); reading again", self.generation())
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or a lost broker: read again from the last checkpoint
                log.exception("task console projector failed; again in %.1fs", self.backoff_s)
                await asyncio.sleep(self.backoff_s)
            finally:
                await consumer.stop()

    async def _open(self) -> AIOKafkaConsumer:
        consumer = self.make_reader()
        await consumer.start()
        try:
            partitions = []
            for topic in (self.audit_topic, self.dlq_topic):
                partitions += [TopicPartition(topic, i) for i in await partitions_of(consumer, topic)]
            consumer.assign(partitions)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _seek(self, consumer: AIOKafkaConsumer, generation: str | None) -> None:
        """To where the index got under this generation; the start for a partition it never read."""
        done = await _retrying(lambda: self.index.resume_offsets(generation), self.backoff_s)
        fresh = []
        for tp in consumer.assignment():
            offset = done.get(f"{tp.topic}:{tp.partition}")
            if offset is None:
                fresh.append(tp)
            else:
                consumer.seek(tp, offset)
        if fresh:
            await consumer.seek_to_beginning(*fresh)

    async def _catch_up(self, consumer: AIOKafkaConsumer, generation: str | None) -> None:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        for tp, end in ends.items():
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
                await self._apply_batch(consumer, batch, generation)

    async def _apply_batch(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        generation: str | None,
    ) -> None:
        """Fold a batch in its order: the audit records' changes together, a round trip per run of them."""
        if not batch:
            return
        pending: list[timeline.Change] = []
        for records in batch.values():
            for record in records:
                if record.topic == self.audit_topic:
                    change = self._audit_change(record)
                    if change is not None:
                        pending.append(change)
                    continue
                await self._apply_changes(pending)
                pending = []
                await self._apply_dead_letter(record)
        await self._apply_changes(pending)
        positions = {f"{tp.topic}:{tp.partition}": records[-1].offset + 1 for tp, records in batch.items() if records}
        await _retrying(lambda: self.index.checkpoint(positions, generation), self.backoff_s)

    async def _apply_changes(self, changes: list[timeline.Change]) -> None:
        if changes:
            await _retrying(lambda: self.index.apply_all(changes), self.backoff_s)
            RECORDS.labels("audit", "ok").inc(len(changes))

    def _audit_change(self, record: ConsumerRecord[bytes, bytes]) -> timeline.Change | None:
        try:
            audited = AuditRecord.model_validate_json(record.value or b"")
        except ValidationError as exc:
            RECORDS.labels("audit", "malformed").inc()
            log.warning("task console: skipping a malformed audit record: %s", exc.errors()[:3])
            return None
        return timeline.from_audit(audited, timeline.trace_id_of(list(record.headers or ())))

    async def _apply_dead_letter(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            letter = DeadLetter.model_validate_json(record.value or b"")
        except ValidationError as exc:
            RECORDS.labels("dlq", "malformed").inc()
            log.warning("task console: skipping a malformed dead letter: %s", exc.errors()[:3])
            return
        await _retrying(lambda: self.index.add_dead_letter(letter), self.backoff_s)
        if letter.task_id:
            change = timeline.from_dead_letter(letter, letter.task_id)
            await _retrying(lambda: self.index.apply(change), self.backoff_s)
        RECORDS.labels("dlq", "ok").inc()


async def _retrying(call: Callable[[], Awaitable[R]], backoff_s: float) -> R:
    """Redis away for a moment: nothing is lost; wait, then do it again."""
    while True:
        try:
            return await call()
        except RetryableError as exc:
            log.warning("task console: will retry in %.1fs: %s", backoff_s, exc)
            await asyncio.sleep(backoff_s)
