"""Rebuilding Redis from Kafka: read the audit, results and control topics from the start, write the state back.

Run by whichever service first finds the state generation gone
(``handrail.recovery.keeper``), holding the rebuild lock; every guarded script
in every process refuses to run until it is done, so nothing decides on a
half-written state. See ``docs/design.md`` for why this and not transactions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from handrail.audit.log import restore_chain
from handrail.autonomy.levels import restore_change
from handrail.autonomy.records import AutonomyChanged
from handrail.bus.broker import partitions_of
from handrail.errors import RetryableError
from handrail.messages import ControlRecord, TaskResult
from handrail.recovery.facts import Facts
from handrail.state import TaskStore
from handrail.state import generation as gen
from handrail.state.budgets import BudgetStore
from handrail.state.controls import ControlStore
from handrail.topics import Topics

log = logging.getLogger(__name__)

#: Tasks written per Redis pipeline: large enough to make few round trips, small enough to keep the
#: rebuild lock fresh between batches.
_BATCH = 200
#: A read that gets nothing for this long while the end is not reached means the broker is stuck.
_STALL_S = 30.0


class RebuildAborted(RetryableError):
    """The rebuild lost its lock (Redis was wiped again, or the lock expired): it is started over."""


@dataclass(frozen=True)
class RebuildReport:
    generation: str
    tasks: int
    records: int
    halts: int
    seconds: float
    autonomy: int = 0

    def describe(self) -> str:
        return (
            f"state rebuilt from Kafka as generation {self.generation}: {self.tasks} tasks from "
            f"{self.records} audit records, {self.halts} halts, {self.autonomy} autonomy changes, "
            f"in {self.seconds:.2f}s"
        )


async def read_topic(consumer: AIOKafkaConsumer, topic: str) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the start up to its end as of now, partition by partition."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        while await consumer.position(tp) < ends[tp]:
            batch = await consumer.getmany(tp, timeout_ms=int(_STALL_S * 1000))
            if not batch:
                raise RetryableError(f"reading {tp.topic}[{tp.partition}] stalled at {await consumer.position(tp)}")
            for record in batch.get(tp, []):
                if record.offset < ends[tp]:
                    yield record


async def topics_are_empty(consumer: AIOKafkaConsumer, topics: list[str]) -> bool:
    """Whether nothing was ever written to ``topics`` (a first start: nothing to wait for)."""
    tps: list[TopicPartition] = []
    for topic in topics:
        tps += [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
    ends = await consumer.end_offsets(tps)
    return all(offset == 0 for offset in ends.values())


class Rebuilder:
    """Puts Redis back together from the audit and control topics."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        topics: Topics,
        make_reader: Callable[[], AIOKafkaConsumer],
        *,
        settle_s: float,
        lock_ttl_s: float,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.topics = topics
        self.make_reader = make_reader
        self.settle_s = settle_s
        self.lock_ttl_s = lock_ttl_s
        self.tasks = TaskStore(redis, prefix)
        self.budgets = BudgetStore(redis, prefix)
        self.controls = ControlStore(redis, prefix)

    async def rebuild(self, token: str) -> RebuildReport:
        """Rebuild while holding the lock ``token``; the new generation once committed."""
        started = time.monotonic()
        reader = self.make_reader()
        await reader.start()
        try:
            if not await topics_are_empty(reader, [self.topics.audit]):
                # A record sealed just before the loss may still be on its way to the broker; wait for it,
                # so that the chain continues after it rather than beside it.
                await asyncio.sleep(self.settle_s)
            facts = Facts()
            async for record in read_topic(reader, self.topics.audit):
                facts.fold_audit(record.value or b"")
            async for record in read_topic(reader, self.topics.results):
                if record.key:
                    task_id = record.key.decode(errors="replace")
                    known = facts.tasks.get(task_id)
                    # Only a resumed task has more than one result: only its need reading.
                    resumed = known is not None and known.epoch > 1
                    facts.fold_result(task_id, _result_id(record.value or b"") if resumed else None)
            async for record in read_topic(reader, self.topics.control):
                _fold_control(facts, record.value or b"")
        finally:
            await reader.stop()
        await self._write(facts, token)
        generation = await gen.commit(self.redis, self.prefix, token)
        if generation is None:
            raise RebuildAborted("the rebuild lock was lost before the state was complete; starting over")
        report = RebuildReport(
            generation,
            sum(1 for t in facts.tasks.values() if t.is_task),
            facts.records,
            len(facts.halts),
            time.monotonic() - started,
            len(facts.autonomy),
        )
        if facts.unreadable:
            log.warning("%d audit records could not be read and were skipped", facts.unreadable)
        return report

    async def _write(self, facts: Facts, token: str) -> None:
        tasks = list(facts.tasks.values())
        for start in range(0, len(tasks), _BATCH):
            if not await gen.extend_lock(self.redis, self.prefix, token, self.lock_ttl_s):
                raise RebuildAborted("the rebuild lock was lost while writing; starting over")
            pipe = self.redis.pipeline(transaction=False)
            for task in tasks[start : start + _BATCH]:
                restore_chain(pipe, self.prefix, task.task_id, task.audit_head, task.audit_seq, task.records)
                if task.is_task:
                    self.tasks.restore(pipe, task.task_id, task.task_record(), task.accepted, task.joins)
                if task.budget is not None:
                    self.budgets.restore(
                        pipe,
                        task.task_id,
                        task.budget.caps,
                        task.budget.deadline_ms,
                        task.budget.used.amount(),
                        {agent: spend.amount() for agent, spend in task.budget.by_agent.items()},
                        list(task.budget.grants.values()),
                    )
            await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for (scope, name), (reason, by, error_type) in facts.halts.items():
            self.controls.restore_halt(pipe, scope, name, reason, by, error_type)
        for change in facts.autonomy.values():
            restore_change(pipe, self.prefix, change)
        await pipe.execute()


def _fold_control(facts: Facts, value: bytes) -> None:
    """A control record is a halt or breaker (``ControlRecord``) or an autonomy change; anything else is skipped."""
    try:
        control = ControlRecord.model_validate_json(value)
    except ValueError:
        try:
            change = AutonomyChanged.model_validate_json(value)
        except ValueError:
            return
        facts.fold_autonomy(change)
        return
    facts.fold_control(control)


def _result_id(value: bytes) -> str | None:
    """The ``message_id`` of a result record (None when it is not readable: it counts as the task's)."""
    try:
        return TaskResult.model_validate_json(value).message_id
    except ValueError:
        return None
