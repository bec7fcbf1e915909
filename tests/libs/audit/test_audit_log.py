"""The audit chain on real Redis: concurrent writers cannot fork it, redeliveries do not extend it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from tests.fixtures.publishing import CapturingPublisher

from handrail.audit import AuditLog, verify_chain
from handrail.hashing import GENESIS
from handrail.state import connect_redis, generation

pytestmark = pytest.mark.bus


@pytest.fixture
async def log_and_sink(redis_url: str) -> AsyncIterator[tuple[AuditLog, CapturingPublisher]]:
    redis = connect_redis(redis_url)
    sink = CapturingPublisher()
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(redis, prefix)  # a namespace of its own, empty on purpose
    yield AuditLog(redis, sink, "audit", prefix=prefix), sink  # type: ignore[arg-type]
    await redis.aclose()


async def test_concurrent_writers_build_one_unbroken_chain(log_and_sink: tuple[AuditLog, CapturingPublisher]) -> None:
    log, sink = log_and_sink
    await asyncio.gather(
        *(
            log.record("task-1", dedupe_key=f"m{i}", actor=f"service:s{i % 3}", action="step.completed")
            for i in range(40)
        )
    )
    records = sorted(sink.records, key=lambda r: r.seq)
    assert [r.seq for r in records] == list(range(1, 41))
    assert records[0].prev_hash == GENESIS
    assert verify_chain([(None, r) for r in records]).intact


async def test_a_redelivered_decision_gets_the_same_record(log_and_sink: tuple[AuditLog, CapturingPublisher]) -> None:
    log, _ = log_and_sink
    first = await log.record("task-2", dedupe_key="msg-1", actor="agent:a", action="step.completed", tokens=5)
    again = await log.record("task-2", dedupe_key="msg-1", actor="agent:a", action="step.completed", tokens=5)
    nxt = await log.record("task-2", dedupe_key="msg-2", actor="agent:b", action="task.completed")
    assert again == first
    assert nxt.seq == 2 and nxt.prev_hash == first.record_hash


async def test_verify_names_the_first_bad_record(log_and_sink: tuple[AuditLog, CapturingPublisher]) -> None:
    log, sink = log_and_sink
    for i in range(5):
        await log.record("task-3", dedupe_key=f"m{i}", actor="agent:a", action=f"step{i}")
    chain = [(i * 10, r) for i, r in enumerate(sink.records)]
    changed = list(chain)
    changed[2] = (20, chain[2][1].model_copy(update={"reason": "edited later"}))
    report = verify_chain(changed)
    assert (report.intact, report.bad_seq, report.bad_offset) == (False, 3, 20)
    assert "does not match its record_hash" in report.problem
    # Two writers' publishes may land in either order: the links, not the log, order the chain.
    swapped = [chain[0], chain[2], chain[1], chain[3], chain[4]]
    assert verify_chain(swapped).intact
    resequenced = list(chain)
    resequenced[1] = (10, chain[1][1].model_copy(update={"seq": 3}))
    assert not verify_chain(resequenced).intact, "a record's seq is part of its hash"
    dropped = chain[:1] + chain[2:]
    assert verify_chain(dropped).bad_seq == 3


async def test_a_record_published_twice_is_one_record_but_a_fork_breaks_the_chain(
    log_and_sink: tuple[AuditLog, CapturingPublisher],
) -> None:
    log, sink = log_and_sink
    for i in range(3):
        await log.record("task-4", dedupe_key=f"m{i}", actor="agent:a", action=f"step{i}")
    chain = [(i, r) for i, r in enumerate(sink.records)]
    republished = [chain[0], chain[1], chain[1], chain[2], (9, chain[1][1])]
    report = verify_chain(republished)
    assert report.intact and report.records == 3, "at-least-once delivery: the same record again is no new record"
    fork = chain[1][1].model_copy(update={"reason": "another decision"})
    forked = [chain[0], chain[1], (5, fork.model_copy(update={"record_hash": fork.computed_hash()})), chain[2]]
    assert verify_chain(forked).bad_seq == 2 and "expected seq 3" in verify_chain(forked).problem


async def test_a_known_head_saves_the_read_and_a_stale_or_wrong_one_still_chains(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(redis, prefix)
    sink = CapturingPublisher()
    first, second = (AuditLog(redis, sink, "audit", prefix=prefix) for _ in range(2))  # type: ignore[arg-type]
    reads = 0
    real_hmget = redis.hmget

    async def counting_hmget(*args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        return await real_hmget(*args, **kwargs)  # type: ignore[arg-type]

    redis.hmget = counting_hmget  # type: ignore[method-assign]
    try:
        one = await first.record("t", dedupe_key="m1", actor="service:a", action="x")
        assert reads == 1, "nothing known yet: the head is read"
        second.hint("t", first.head_of("t"))  # as a handoff's header carries it
        two = await second.record("t", dedupe_key="m2", actor="service:b", action="y")
        assert reads == 1 and two.prev_hash == one.record_hash, "the hinted head needs no read"
        three = await first.record("t", dedupe_key="m3", actor="service:a", action="z")  # first's head is stale
        second.hint("t", f"{'f' * 64}:7")  # a wrong (or forged) hint
        four = await second.record("t", dedupe_key="m4", actor="service:b", action="w")
        second.hint("t", "not a head")  # ignored
        assert (three.seq, three.prev_hash, four.seq, four.prev_hash) == (3, two.record_hash, 4, three.record_hash)
        assert reads == 1, "a wrong guess is corrected by the compare-and-set itself"
        assert verify_chain([(None, r) for r in sink.records]).intact
    finally:
        await redis.aclose()
