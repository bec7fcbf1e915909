"""Rebuild the review index from Kafka at start-up (and after Redis lost its state), then keep following.

Kafka is the record: every replica reads ``reviews.requested`` and then
``reviews.decided`` from the beginning (no consumer group), applies each record
to the shared index (idempotently: a record applied twice changes nothing),
and only then reports ready. A decision whose request has not been indexed yet
(the two topics are read side by side) is kept and applied once it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import Counter
from pydantic import ValidationError

from handrail.bus.broker import partitions_of
from handrail.errors import RetryableError
from handrail.messages import ReviewDecided, ReviewRequested
from handrail_review.handlers import ReviewDesk

log = logging.getLogger(__name__)

M = TypeVar("M", ReviewRequested, ReviewDecided)

#: A batch per poll; reviews are few, so this is only a bound.
_MAX_RECORDS = 500
_POLL_MS = 200
#: Decisions waiting for their request: kept this many at most (a request is normally milliseconds behind).
_MAX_DEFERRED = 10_000

RECORDS = Counter(
    "handrail_review_records_total", "Review records read from Kafka, by topic kind and outcome.", ["kind", "outcome"]
)


class Projector:
    """Feeds ``reviews.requested`` and ``reviews.decided`` into the desk; ``ready`` once caught up."""

    def __init__(
        self,
        make_reader: Callable[[], AIOKafkaConsumer],
        requested_topic: str,
        decided_topic: str,
        desk: ReviewDesk,
        backoff_s: float,
        generation: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.make_reader = make_reader
        self.requested_topic = requested_topic
        self.decided_topic = decided_topic
        self.desk = desk
        self.backoff_s = backoff_s
        self.generation = generation
        self.ready = asyncio.Event()
        self._deferred: list[ReviewDecided] = []

    async def run(self) -> None:
        """Catch up, then follow, until cancelled; Kafka or Redis outages are waited out."""
        while True:
            try:
                consumer = await self._open()
            except Exception as exc:
                log.warning("review projector: cannot read the review topics yet: %s", exc)
                await asyncio.sleep(self.backoff_s)
                continue
            try:
                # Redis rebuilt from Kafka (it lost its state) has lost the index too: read it all again.
                rebuilt_as = self.generation()
                await self._catch_up(consumer, self.requested_topic)
                await self._catch_up(consumer, self.decided_topic)
                await self._retry_deferred()
                self.ready.set()
                log.info("review index rebuilt from Kafka")
                while self.generation() == rebuilt_as:
                    batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
                    await self._apply_batch(batch)
                    await self._retry_deferred()
                self.ready.clear()
                log.warning(
                    "review projector: the state was rebuilt (generation %s); reading the reviews again",
                    self.generation(),
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or a lost broker: read everything again; applying twice changes nothing
                log.exception("review projector failed; rebuilding in %.1fs", self.backoff_s)
                await asyncio.sleep(self.backoff_s)
            finally:
                await consumer.stop()

    async def _open(self) -> AIOKafkaConsumer:
        """A group-less consumer (with the service's Kafka credentials) at the start of both topics."""
        consumer = self.make_reader()
        await consumer.start()
        try:
            partitions = []
            for topic in (self.requested_topic, self.decided_topic):
                partitions += [TopicPartition(topic, i) for i in await partitions_of(consumer, topic)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _catch_up(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        partitions = [tp for tp in consumer.assignment() if tp.topic == topic]
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
                await self._apply_batch(batch)

    async def _apply_batch(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for records in batch.values():
            for record in records:
                await self._apply(record)

    async def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        value = record.value or b""
        if record.topic == self.requested_topic:
            await self._decode_and(ReviewRequested, value, "requested", self.desk.on_requested)
            return

        async def decided(payload: ReviewDecided) -> None:
            caught_up = self.ready.is_set()
            if not await self.desk.on_decided(payload, finish=caught_up) and len(self._deferred) < _MAX_DEFERRED:
                self._deferred.append(payload)

        await self._decode_and(ReviewDecided, value, "decided", decided)

    async def _decode_and(self, model: type[M], value: bytes, kind: str, apply: Callable[[M], Awaitable[None]]) -> None:
        try:
            payload = model.model_validate_json(value)
        except ValidationError as exc:
            # Not ours to dead-letter: every replica reads every record, on every start.
            RECORDS.labels(kind, "malformed").inc()
            log.warning("review projector: skipping a malformed %s record: %s", kind, exc.errors()[:3])
            return
        while True:
            try:
                await apply(payload)
                RECORDS.labels(kind, "ok").inc()
                return
            except RetryableError as exc:  # Redis is down: nothing is lost, wait and apply it again
                log.warning("review projector: will retry in %.1fs: %s", self.backoff_s, exc)
                await asyncio.sleep(self.backoff_s)

    async def _retry_deferred(self) -> None:
        waiting, self._deferred = self._deferred, []
        for payload in waiting:
            if not await self.desk.on_decided(payload, finish=self.ready.is_set()):
                self._deferred.append(payload)
