"""The keyed scheduler: many keys at once, one message at a time per key, retries in place."""

from __future__ import annotations

import asyncio

from handrail.bus.delivery import Delivery
from handrail.bus.offsets import PartitionOffsets
from handrail.bus.publisher import LANE_HEADER
from handrail.bus.scheduler import KeyedScheduler


def delivery(offset: int, key: str | None) -> Delivery:
    return Delivery("t", 0, offset, key, b"")


async def test_messages_of_one_key_run_in_order_and_keys_run_at_once() -> None:
    running: set[str] = set()
    peak = 0
    seen: dict[str, list[int]] = {}

    async def process(d: Delivery, attempt: int) -> None:
        nonlocal peak
        assert d.key is not None and d.key not in running, "two messages of one key ran at once"
        running.add(d.key)
        peak = max(peak, len(running))
        await asyncio.sleep(0.01)
        seen.setdefault(d.key, []).append(d.offset)
        running.discard(d.key)

    scheduler = KeyedScheduler(process, name="t", retry_backoff_s=0.01)
    offsets = PartitionOffsets()
    for offset in range(200):
        scheduler.submit(delivery(offset, f"k{offset % 20}"), offsets)
    while scheduler.in_flight:
        await scheduler.wait_for_change(1)
    assert peak == 20
    assert all(s == sorted(s) and len(s) == 10 for s in seen.values())
    assert offsets.committable() == 200


async def test_lanes_of_one_key_run_side_by_side_each_in_order() -> None:
    running: set[tuple[str | None, bytes | None]] = set()
    peak = 0
    seen: dict[bytes | None, list[int]] = {}

    async def process(d: Delivery, attempt: int) -> None:
        nonlocal peak
        lane = (d.key, d.header(LANE_HEADER))
        assert lane not in running, "two messages of one lane ran at once"
        running.add(lane)
        peak = max(peak, len(running))
        await asyncio.sleep(0.01)
        seen.setdefault(lane[1], []).append(d.offset)
        running.discard(lane)

    scheduler = KeyedScheduler(process, name="t", retry_backoff_s=0.01)
    offsets = PartitionOffsets()
    for offset in range(30):
        lane = () if offset % 3 == 0 else ((LANE_HEADER, f"step.b{offset % 3}".encode()),)
        scheduler.submit(Delivery("t", 0, offset, "task-1", b"", headers=lane), offsets)
    while scheduler.in_flight:
        await scheduler.wait_for_change(1)
    assert peak == 3, "the task's own messages and its two branches' lanes, at once"
    assert all(s == sorted(s) and len(s) == 10 for s in seen.values())


async def test_a_failing_message_is_tried_again_in_place_and_holds_its_key() -> None:
    order: list[tuple[int, int]] = []

    async def process(d: Delivery, attempt: int) -> None:
        order.append((d.offset, attempt))
        if d.offset == 0 and attempt < 3:
            raise RuntimeError("not yet")

    scheduler = KeyedScheduler(process, name="t", retry_backoff_s=0.001)
    offsets = PartitionOffsets()
    scheduler.submit(delivery(0, "a"), offsets)
    scheduler.submit(delivery(1, "a"), offsets)
    while scheduler.in_flight:
        await scheduler.wait_for_change(1)
    assert order == [(0, 1), (0, 2), (0, 3), (1, 1)]
    assert offsets.committable() == 2


async def test_a_revoked_partition_abandons_what_it_had_queued() -> None:
    gate = asyncio.Event()
    done: list[int] = []

    async def process(d: Delivery, attempt: int) -> None:
        await gate.wait()
        done.append(d.offset)

    scheduler = KeyedScheduler(process, name="t", retry_backoff_s=0.001)
    offsets = PartitionOffsets()
    scheduler.submit(delivery(0, "a"), offsets)
    scheduler.submit(delivery(1, "a"), offsets)
    await asyncio.sleep(0)
    release = asyncio.create_task(scheduler.release([offsets], timeout_s=5))
    await asyncio.sleep(0.05)
    assert not release.done()  # it waits for the running message
    gate.set()
    await release
    while scheduler.in_flight:
        await scheduler.wait_for_change(1)
    assert done == [0]  # offset 1 was queued, not started: its next owner gets it
    assert offsets.committable() == 1
