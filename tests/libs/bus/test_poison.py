"""A message that fails the same way again and again is dead-lettered as poison, never tried forever."""

from __future__ import annotations

from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker

from handrail.bus import Delivery, Pipeline, Publisher
from handrail.errors import StateUnavailable
from handrail.messages import DeadLetter, TaskSubmitted


class _NoStore:
    async def mark_done(self, *args: Any) -> None:
        return None


def _pipeline(broker: KafkaBroker, letters: list[DeadLetter]) -> Pipeline:
    pipeline = Pipeline(
        service="router",
        publisher=Publisher(broker),
        store=_NoStore(),
        dlq_topic="dlq",
        poison_after_attempts=3,  # type: ignore[arg-type]
    )

    @broker.subscriber("dlq", group_id="dlq-reader")
    async def on_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    return pipeline


TASK = TaskSubmitted(task_id="t-poison", workflow="expense-approval", input={})
DELIVERY = Delivery("tasks", 0, 7, "t-poison", TASK.to_bytes())


async def test_a_message_failing_every_attempt_is_dead_lettered_as_poison_on_the_last() -> None:
    broker = KafkaBroker()
    letters: list[DeadLetter] = []
    ended: list[str] = []
    pipeline = _pipeline(broker, letters)

    async def handler(payload: TaskSubmitted, delivery: Delivery) -> None:
        raise RuntimeError("a bug that never goes away")

    async def on_rejected(error: Any, delivery: Delivery, payload: Any) -> None:
        ended.append(error.error_type)
        raise RuntimeError("and ending the task fails too")

    pipeline.subscribe("tasks", group_id="g", payload_type=TaskSubmitted, handler=handler,
                       on_rejected=on_rejected, topic_kind="tasks")  # fmt: skip
    sub = pipeline.subscriptions[0]
    async with TestKafkaBroker(broker):
        for attempt in (1, 2):
            with pytest.raises(RuntimeError):
                await pipeline.process(sub, DELIVERY, attempt)
        await pipeline.process(sub, DELIVERY, 3)  # the last attempt parks it: nothing raises
    poison = [d for d in letters if d.error_type == "poison"]
    assert len(poison) == 1 and poison[0].task_id == "t-poison"
    assert "3 times in a row" in poison[0].reason and "ending the task fails too" in poison[0].reason
    assert {d.message_id for d in letters if d.error_type == "internal_error"}.isdisjoint({poison[0].message_id})
    assert ended[-1] == "poison"


async def test_redis_being_down_is_never_poison() -> None:
    broker = KafkaBroker()
    letters: list[DeadLetter] = []
    pipeline = _pipeline(broker, letters)

    async def handler(payload: TaskSubmitted, delivery: Delivery) -> None:
        raise StateUnavailable("Redis is down")

    pipeline.subscribe("tasks", group_id="g", payload_type=TaskSubmitted, handler=handler, topic_kind="tasks")
    async with TestKafkaBroker(broker):
        for attempt in range(1, 10):
            with pytest.raises(StateUnavailable):
                await pipeline.process(pipeline.subscriptions[0], DELIVERY, attempt)
    assert letters == []
