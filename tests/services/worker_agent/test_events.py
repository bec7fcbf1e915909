"""A step's decision events: successes go together, a failure goes at once with what came before it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from handrail.messages import DecisionEvent, DecisionEvents, Payload
from handrail.topics import Topics
from handrail_worker.handlers import EventPublisher


class Sender:
    """The publisher's ``send``: keeps each record and hands back an acknowledgement to wait for."""

    def __init__(self) -> None:
        self.records: list[DecisionEvents] = []
        self.acks: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, payload: Payload, *, key: str | None) -> asyncio.Future[Any]:
        assert topic == "t.events" and isinstance(payload, DecisionEvents) and key == payload.task_id
        self.records.append(payload)
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


def event(n: int, outcome: str = "ok") -> DecisionEvent:
    return DecisionEvent(
        message_id=f"e{n}",
        task_id="task-1",
        workflow="w",
        step="s",
        agent="a",
        kind="tool_call",
        name="lookup",
        outcome=outcome,  # type: ignore[arg-type]
        latency_ms=1.0,
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def publisher() -> tuple[EventPublisher, Sender]:
    sender = Sender()
    runtime = SimpleNamespace(publisher=sender, topics=Topics("t."))
    return EventPublisher(runtime), sender  # type: ignore[arg-type]


def ids(record: DecisionEvents) -> list[str]:
    return [e.message_id for e in record.events]


async def test_successes_wait_for_the_step_end_and_a_failure_goes_at_once() -> None:
    events, sender = publisher()
    await events.emit(event(1))
    await events.emit(event(2))
    assert sender.records == [], "successes wait"
    await events.emit(event(3, "error"))
    assert [ids(r) for r in sender.records] == [["e1", "e2", "e3"]], "the failure goes now, after what came first"
    await events.emit(event(4))
    flushing = asyncio.create_task(events.flush())
    await asyncio.sleep(0)
    assert [ids(r) for r in sender.records] == [["e1", "e2", "e3"], ["e4"]]
    assert not flushing.done(), "flush waits for every acknowledgement"
    for ack in sender.acks:
        ack.set_result(None)
    await flushing
    assert len({r.message_id for r in sender.records}) == 2


async def test_successes_that_waited_long_enough_go_with_the_next_event(monkeypatch: pytest.MonkeyPatch) -> None:
    events, sender = publisher()
    monkeypatch.setattr(EventPublisher, "LINGER_S", 0.0)
    await events.emit(event(1))
    assert [ids(r) for r in sender.records] == [["e1"]]


async def test_a_step_without_calls_sends_nothing() -> None:
    events, sender = publisher()
    await events.flush()
    assert sender.records == []


def test_a_lone_event_as_the_topic_carried_it_before_reads_as_a_batch_of_one() -> None:
    batch = DecisionEvents.model_validate_json(event(7).to_bytes())
    assert batch.task_id == "task-1" and ids(batch) == ["e7"]
    with pytest.raises(ValueError, match="at least 1"):
        DecisionEvents.model_validate_json(b'{"message_id": "m", "task_id": "t", "events": []}')
