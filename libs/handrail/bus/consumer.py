"""A group consumer that runs up to ``max_in_flight`` messages at once.

Fetches in batches, hands each record to a ``KeyedScheduler`` (one task's messages in
order, many tasks at once), commits each partition up to its lowest unfinished
offset, pauses every partition while the cap is reached (backpressure: memory stays
bounded), waits for running messages before a rebalance takes partitions away, and
drains on shutdown within a grace period. On each assignment it claims the partition
(``claim``: a fresh fencing token, ``handrail.state.fences``) and every delivery
fetched from it carries that token.

FastStream's subscribers run one message at a time per process (or, with workers,
without per-key order or a safe commit), so the services consume through this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from handrail.bus.delivery import Delivery
from handrail.bus.offsets import PartitionOffsets
from handrail.bus.scheduler import KeyedScheduler, Process
from handrail.metrics import CONSUMER_LAG, IN_FLIGHT

log = logging.getLogger(__name__)

#: How long one fetch waits for records; also how often a paused consumer looks at its cap again.
_POLL_MS = 50
#: Offsets are committed at most this often: a commit is a round trip to the group coordinator,
#: and a redelivery after a crash is recognised anyway, so a few hundred ms of it is cheap.
_COMMIT_INTERVAL_S = 0.2
#: Resume fetching once in-flight work falls to this share of the cap (hysteresis: no pause/resume flapping).
_RESUME_AT = 0.75
#: How long claiming an assigned partition may take before its deliveries go unfenced.
_CLAIM_TIMEOUT_S = 2.0
#: How often the lag gauge is refreshed: Prometheus scrapes every 10-30 s, so once a second is plenty.
_LAG_INTERVAL_S = 1.0

#: Takes an assigned partition over and returns its fencing token.
Claim = Callable[[TopicPartition], Awaitable[str]]


class ConcurrentConsumer:
    """Consumes ``topics`` in a group, running messages through ``process`` concurrently."""

    def __init__(
        self,
        make_consumer: Callable[[], AIOKafkaConsumer],
        topics: list[str],
        process: Process,
        *,
        name: str,
        max_in_flight: int,
        retry_backoff_s: float,
        shutdown_grace_s: float,
        claim: Claim | None = None,
    ) -> None:
        self._make_consumer = make_consumer
        self._claim = claim
        self._fences: dict[TopicPartition, str | None] = {}
        self._topics = topics
        self._name = name
        self._max_in_flight = max_in_flight
        self._shutdown_grace_s = shutdown_grace_s
        self.scheduler = KeyedScheduler(process, name=name, retry_backoff_s=retry_backoff_s)
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_commit = 0.0
        self._last_lag = 0.0
        #: Fetching is paused because the cap is reached (``_RESUME_AT`` resumes it).
        self._backpressure = False
        #: The most messages this consumer ever had in flight (the benchmark reads it).
        self.peak_in_flight = 0

    async def start(self) -> None:
        """Join the group and start fetching."""
        consumer = self._make_consumer()
        await consumer.start()
        consumer.subscribe(self._topics, listener=_Rebalance(self))
        self._consumer = consumer
        self._loop_task = asyncio.create_task(self._run(), name=f"{self._name}:fetch")
        self._loop_task.add_done_callback(self._fetching_ended)

    def _fetching_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A consumer that stopped fetching would hold its partitions and do nothing: better to die and be
        # restarted (the supervisor's job), redelivering what had not finished.
        log.critical("%s: the fetch loop failed; exiting", self._name, exc_info=task.exception())
        os._exit(70)

    async def stop(self) -> None:
        """Stop fetching, let running messages finish (within the grace period), commit, leave the group."""
        self._stopping = True
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self.scheduler.drain(self._shutdown_grace_s)
        if self._consumer is not None:
            await self._commit(force=True)
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while not self._stopping:
            in_flight = self.scheduler.in_flight
            if not self._backpressure and in_flight >= self._max_in_flight:
                consumer.pause(*consumer.assignment())
                self._backpressure = True
            elif self._backpressure and in_flight <= self._max_in_flight * _RESUME_AT:
                consumer.resume(*(tp for tp in consumer.paused() if tp in self._partitions))
                self._backpressure = False
            try:
                batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=max(self._max_in_flight - in_flight, 1))
            except KafkaError as exc:  # the broker went away: the client reconnects by itself
                log.warning("%s: fetch failed: %s", self._name, exc)
                await asyncio.sleep(_POLL_MS / 1000)
                continue
            for tp, records in batch.items():
                offsets = self._partitions.get(tp)
                if offsets is None:
                    self._not_yet_ours(consumer, tp, records[0].offset)
                    continue
                fence = self._fences.get(tp)
                for record in records:
                    self.scheduler.submit(Delivery.from_record(record, fence), offsets)
            self.peak_in_flight = max(self.peak_in_flight, self.scheduler.in_flight)
            IN_FLIGHT.labels(self._name).set(self.scheduler.in_flight)
            await self._commit()
            await self._report_lag(consumer)

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Per topic, what the assigned partitions hold that this consumer has not finished yet.

        The high watermark is the one the last fetch response reported (no extra round trip); a partition
        not fetched from yet counts from its fetch position.
        """
        now = time.monotonic()
        if now - self._last_lag < _LAG_INTERVAL_S:
            return
        self._last_lag = now
        lag = dict.fromkeys(self._topics, 0)
        for tp, offsets in list(self._partitions.items()):
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            start = offsets.first_unfinished
            if start is None:
                try:
                    start = await consumer.position(tp)
                except Exception as exc:  # revoked meanwhile, or no position yet: its next owner reports it
                    log.debug("%s: no position for %s yet (%s)", self._name, tp, exc)
                    continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, highwater - start)
        for topic, behind in lag.items():
            CONSUMER_LAG.labels(self._name, topic).set(behind)

    async def _commit(self, force: bool = False, only: list[TopicPartition] | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < _COMMIT_INTERVAL_S:
            return
        self._last_commit = now
        assert self._consumer is not None
        wanted = only if only is not None else list(self._partitions)
        offsets: dict[TopicPartition, int] = {}
        for tp in wanted:
            partition = self._partitions.get(tp)
            offset = partition.committable() if partition is not None else None
            if offset is not None:
                offsets[tp] = offset
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:  # a rebalance or a lost broker: redelivered, then deduped
            log.warning("%s: commit failed (%s); those messages may be delivered again", self._name, exc)
            return
        for tp, offset in offsets.items():
            self._partitions[tp].committed(offset)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before partitions move: finish what runs on them (bounded), commit them, forget them."""
        gone = [tp for tp in revoked if tp in self._partitions]
        await self.scheduler.release([self._partitions[tp] for tp in gone], self._shutdown_grace_s)
        await self._commit(force=True, only=gone)
        for tp in gone:
            del self._partitions[tp]
            self._fences.pop(tp, None)

    def _not_yet_ours(self, consumer: AIOKafkaConsumer, tp: TopicPartition, first_offset: int) -> None:
        """Records of a partition this consumer does not run (yet): never drop them unseen.

        Revoked while the batch was in the air: its next owner reads them from the committed offset.
        Assigned, but the assignment is still being taken over (``_on_assigned`` claiming its fence):
        fetch them again once it is done - the fetch position has already moved past them.
        """
        if tp in consumer.assignment():
            consumer.seek(tp, first_offset)
            consumer.pause(tp)  # resumed when the assignment is taken over

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        # The fences first, all at once (a slow Redis delays the take-over once, not once per partition);
        # until the partitions are registered below, what the fetcher returns for them is fetched again.
        partitions = sorted(assigned)
        fences = await asyncio.gather(*(self._claim_partition(tp) for tp in partitions))
        for tp, fence in zip(partitions, fences, strict=True):
            self._partitions[tp] = PartitionOffsets()
            self._fences[tp] = fence
        if self._consumer is not None and not self._backpressure:
            self._consumer.resume(*partitions)

    async def _claim_partition(self, tp: TopicPartition) -> str | None:
        if self._claim is None:
            return None
        try:
            return await asyncio.wait_for(self._claim(tp), _CLAIM_TIMEOUT_S)
        except Exception as exc:  # Redis away: the state checks fail closed anyway; only the fence is missing
            log.warning("%s: could not fence %s (%s); its messages run unfenced", self._name, tp, exc)
            return None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: ConcurrentConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._owner._on_assigned(set(assigned))
