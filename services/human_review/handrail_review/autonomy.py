"""Progressive autonomy, evaluated continuously: how reviews end, judged by the graduation rule, applied if ``auto``.

Every replica reads ``reviews.requested``, ``reviews.decided`` and ``control``
from the start (no consumer group) and keeps following them: the reviews are
counted in memory (``handrail.autonomy.Tally``; Kafka is the record, so there
is nothing to lose), and each autonomy change read on ``control`` is stored in
Redis if Redis does not have it yet (a writer that died between publishing and
storing). Once caught up, every ``interval_s`` it judges each (agent, workflow)
and sets the ``handrail_autonomy_*`` gauges; with ``auto: true`` it applies what
the rule recommends, decided on the level it read (``expected``), so replicas
judging at once change it once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from handrail.autonomy import (
    Assessment,
    AutonomyChanged,
    AutonomyError,
    AutonomyLevels,
    Outcome,
    Recorder,
    Tally,
    assess,
)
from handrail.bus.broker import partitions_of
from handrail.contracts.graduation import LADDER
from handrail.errors import RetryableError
from handrail.topics import Topics
from handrail_review.metrics import (
    AUTONOMY_CHANGES,
    AUTONOMY_LEVEL,
    AUTONOMY_RATIO,
    AUTONOMY_RECOMMENDATION,
    AUTONOMY_REVIEWS,
)

log = logging.getLogger(__name__)

ACTOR = "service:human-review"
_POLL_MS = 200
#: A batch per poll; reviews are few, so this is only a bound.
_MAX_RECORDS = 500


class AutonomyWatch:
    """Counts review outcomes from Kafka and judges (and, with ``auto``, applies) the graduation rule."""

    def __init__(
        self,
        levels: AutonomyLevels,
        recorder: Recorder,
        topics: Topics,
        make_reader: Callable[[], AIOKafkaConsumer],
        *,
        interval_s: float,
        backoff_s: float,
    ) -> None:
        self.levels = levels
        self.recorder = recorder
        self.topics = topics
        self.make_reader = make_reader
        self.interval_s = interval_s
        self.backoff_s = backoff_s
        self.rule = levels.contracts.graduation
        self.tally = Tally()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Catch up, then follow and judge every ``interval_s``, until cancelled; outages are waited out."""
        while True:
            try:
                consumer = await self._open()
            except Exception as exc:
                log.warning("autonomy: cannot read the review and control topics yet: %s", exc)
                await asyncio.sleep(self.backoff_s)
                continue
            try:
                self.tally = Tally()  # read from the start again: counting twice is not possible, only missing
                for tp in sorted(consumer.assignment()):
                    await self._catch_up(consumer, tp)
                self.ready.set()
                due = 0.0
                while True:
                    _stop_if_cancelled()
                    if time.monotonic() >= due:
                        await self.evaluate()
                        due = time.monotonic() + self.interval_s
                    batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
                    for records in batch.values():
                        for record in records:
                            await self._take(record)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("autonomy watch failed; reading the topics again in %.1fs", self.backoff_s)
                await asyncio.sleep(self.backoff_s)
            finally:
                self.ready.clear()
                await consumer.stop()

    async def _open(self) -> AIOKafkaConsumer:
        consumer = self.make_reader()
        await consumer.start()
        try:
            partitions = []
            for topic in (self.topics.reviews_requested, self.topics.reviews_decided, self.topics.control):
                partitions += [TopicPartition(topic, i) for i in await partitions_of(consumer, topic)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _catch_up(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            _stop_if_cancelled()
            batch = await consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
            for record in batch.get(tp, []):
                await self._take(record)

    async def _take(self, record: ConsumerRecord[bytes, bytes]) -> None:
        value = record.value or b""
        if record.topic == self.topics.reviews_requested:
            self.tally.take("requested", value)
        elif record.topic == self.topics.reviews_decided:
            self.tally.take("decided", value)
        else:
            try:
                change = AutonomyChanged.model_validate_json(value)
            except ValidationError:
                return  # a halt or a breaker (ControlRecord): not ours
            try:
                await self.levels.absorb(change)
            except RetryableError as exc:  # Redis away or rebuilding: the rebuild reads the control topic too
                log.info("autonomy: could not store the change of %s yet: %s", change.key, exc)

    async def evaluate(self) -> list[Assessment]:
        """Judge every (agent, workflow) now: set the gauges; with ``auto``, apply what the rule recommends."""
        found: list[Assessment] = []
        for agent, workflow in self.levels.contracts.agent_workflows():
            try:
                assessment = assess(await self.levels.current(agent, workflow), self.tally, self.rule)
            except RetryableError as exc:
                log.warning("autonomy: cannot read the level of %s in %s now: %s", agent, workflow, exc)
                continue
            _export(assessment)
            found.append(assessment)
            if self.rule is not None and self.rule.auto and assessment.recommendation.changes:
                await self._apply(assessment)
        return found

    async def _apply(self, assessment: Assessment) -> None:
        effective, advice = assessment.effective, assessment.recommendation
        assert self.rule is not None
        try:
            change = await self.levels.set(
                effective.agent,
                effective.workflow,
                advice.level,
                by=ACTOR,
                reason=f"graduation rule ({self.rule.source}): {advice.why}",
                recorder=self.recorder,
                expected=effective.level,
                evidence=assessment.counts.summary(),
            )
        except (AutonomyError, RetryableError) as exc:  # another replica (or a person) came first, or Redis is away
            log.info(
                "autonomy: not applying %s for %s in %s: %s", advice.action, effective.agent, effective.workflow, exc
            )
            return
        AUTONOMY_CHANGES.labels(effective.agent, effective.workflow, advice.action).inc()
        AUTONOMY_LEVEL.labels(effective.agent, effective.workflow).set(LADDER.index(advice.level))
        log.warning(
            "autonomy of %s in %s: %s -> %s by the graduation rule (%s)",
            change.agent,
            change.workflow,
            change.previous.value,
            advice.level.value,
            advice.why,
        )


def _stop_if_cancelled() -> None:
    # A cancellation that lands inside a Redis command can be swallowed by the client (redis-py 8.1 was seen
    # to do so): the task says it is being cancelled and goes on. Stop here rather than follow forever.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _export(assessment: Assessment) -> None:
    effective, counts = assessment.effective, assessment.counts
    pair = (effective.agent, effective.workflow)
    AUTONOMY_LEVEL.labels(*pair).set(LADDER.index(effective.level))
    AUTONOMY_REVIEWS.labels(*pair).set(counts.reviews)
    for outcome in Outcome:
        AUTONOMY_RATIO.labels(*pair, outcome.value).set(counts.ratio(outcome))
    AUTONOMY_RECOMMENDATION.labels(*pair).set(assessment.recommendation.direction)
