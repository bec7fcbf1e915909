"""The task console's index on real Redis: filters, cursor paging, replays that change nothing, bounded timelines."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handrail.audit import AuditRecord
from handrail.messages import DeadLetter
from handrail.state import connect_redis
from handrail_review import timeline
from handrail_review.tasks_index import Cursor, DeadLetterFilter, TaskFilter, TaskIndex

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def index(redis_url: str) -> AsyncIterator[TaskIndex]:
    redis = connect_redis(redis_url)
    yield TaskIndex(redis, f"t{uuid.uuid4().hex[:8]}:", timeline_max=5, max_examined=50)
    await redis.aclose()


def record(task_id: str, seq: int, action: str, at: datetime, **fields: Any) -> AuditRecord:
    return AuditRecord(
        message_id=f"{task_id}/{seq}",
        task_id=task_id,
        seq=seq,
        prev_hash="0" * 64,
        record_hash="0" * 64,
        actor=fields.pop("actor", "service:router"),
        action=action,
        at=at,
        **fields,
    )


def step(task_id: str, seq: int, at: datetime, agent: str, tokens: int = 10) -> AuditRecord:
    return record(
        task_id, seq, "step.completed", at, actor=f"agent:{agent}", workflow="w", step=f"s{seq}", tokens=tokens,
        cost_usd=0.001, details={
            "patch": [{"op": "add", "path": f"/s{seq}", "value": 1}],
            "decisions": [{"kind": "tool_call", "name": "lookup", "outcome": "ok", "latency_ms": 3}],
            "context_seen": {"huge": "x" * 100},
        },
    )  # fmt: skip


async def run_task(
    index: TaskIndex, task_id: str, at: datetime, *, workflow: str = "w", agents: tuple[str, ...] = ("a",),
    end: str | None = "completed", reason: str = "done",
) -> None:  # fmt: skip
    seq = 1
    await index.apply(timeline.from_audit(record(task_id, seq, "task.opened", at, workflow=workflow)))
    for agent in agents:
        seq += 1
        await index.apply(timeline.from_audit(step(task_id, seq, at + timedelta(seconds=seq), agent)))
    if end is not None:
        seq += 1
        ended = record(
            task_id, seq, f"task.{end}", at + timedelta(seconds=seq), workflow=workflow, reason=reason, tokens=99,
            cost_usd=0.5, details={"steps": len(agents)},
        )  # fmt: skip
        await index.apply(timeline.from_audit(ended))


async def ids(index: TaskIndex, where: TaskFilter, limit: int = 50) -> list[str]:
    return [s["task_id"] for s in (await index.tasks(where, None, limit)).items]


async def test_a_task_is_summarised_from_its_records(index: TaskIndex) -> None:
    await run_task(index, "t-1", T0, agents=("intake", "approver"))
    summary = await index.summary("t-1")
    assert summary is not None
    assert (summary["status"], summary["workflow"], summary["agents"]) == ("completed", "w", "intake approver")
    assert (summary["steps"], summary["tokens"], float(summary["cost_usd"])) == ("2", "99", 0.5), "the end's totals"
    assert summary["reason"] == "done" and int(summary["opened_ms"]) == int(T0.timestamp() * 1000)
    assert "ended_ms" in summary
    entries = await index.timeline("t-1")
    assert [e["action"] for e in entries] == ["task.opened", "step.completed", "step.completed", "task.completed"]
    hop = entries[1]
    assert hop["kind"] == "hop" and hop["details"]["patch"] == [{"op": "add", "path": "/s2", "value": 1}]
    assert hop["details"]["decisions"][0]["name"] == "lookup"
    assert "context_seen" not in hop["details"], "the whole context again is left to handrail trace"


async def test_a_record_applied_twice_changes_nothing(index: TaskIndex) -> None:
    opened = record("t-2", 1, "task.opened", T0, workflow="w")
    hop = step("t-2", 2, T0 + timedelta(seconds=1), "a", tokens=7)
    assert await index.apply(timeline.from_audit(opened))
    assert await index.apply(timeline.from_audit(hop))
    before = (await index.summary("t-2"), await index.timeline("t-2"))
    # The whole topic read again (a restart, a second replica, Redis refilled): same index.
    assert not await index.apply(timeline.from_audit(opened))
    assert not await index.apply(timeline.from_audit(hop))
    assert (await index.summary("t-2"), await index.timeline("t-2")) == before
    assert before[0] is not None and before[0]["tokens"] == "7" and before[0]["steps"] == "1"


async def test_records_applied_together_fold_in_order_and_a_repeat_among_them_changes_nothing(
    index: TaskIndex,
) -> None:
    opened = timeline.from_audit(record("t-b", 1, "task.opened", T0, workflow="w"))
    hop = timeline.from_audit(step("t-b", 2, T0 + timedelta(seconds=1), "a", tokens=7))
    ended = timeline.from_audit(
        record(
            "t-b",
            3,
            "task.completed",
            T0 + timedelta(seconds=2),
            workflow="w",
            reason="done",
            tokens=7,
            details={"steps": 1},
        )
    )
    assert await index.apply_all([opened, hop, hop, ended]) == [True, True, False, True]
    summary = await index.summary("t-b")
    assert summary is not None and (summary["status"], summary["steps"], summary["tokens"]) == ("completed", "1", "7")
    assert [e["action"] for e in await index.timeline("t-b")] == ["task.opened", "step.completed", "task.completed"]
    assert await index.apply_all([]) == []


async def test_the_timeline_keeps_the_latest_entries_and_says_how_many_it_dropped(index: TaskIndex) -> None:
    await run_task(index, "t-3", T0, agents=tuple(f"a{i}" for i in range(8)))  # 10 records, 5 kept
    entries = await index.timeline("t-3")
    assert len(entries) == 5 and entries[-1]["action"] == "task.completed"
    assert [e["seq"] for e in entries] == [6, 7, 8, 9, 10]
    summary = await index.summary("t-3")
    assert summary is not None and summary["timeline_dropped"] == "5"


async def test_large_details_are_cut_to_a_note_of_their_size() -> None:
    big = record("t-4", 2, "task.completed", T0, details={"output": {"text": "y" * 50_000}, "steps": 1})
    entry = timeline.from_audit(big).entry
    assert len(entry) < timeline.MAX_ENTRY_BYTES + 1000
    assert '"output":{"truncated":true' in entry and '"steps":1' in entry


async def test_filters_by_status_workflow_agent_time_and_text(index: TaskIndex) -> None:
    await run_task(index, "claim-1", T0, workflow="expense", agents=("intake",), end="completed")
    await run_task(index, "claim-2", T0 + timedelta(minutes=1), workflow="expense", agents=("intake", "auditor"),
                   end="rejected", reason="over the limit")  # fmt: skip
    await run_task(index, "memo-1", T0 + timedelta(minutes=2), workflow="memo", agents=("writer",), end=None)
    await index.apply(timeline.from_audit(record("memo-2", 1, "task.opened", T0 + timedelta(minutes=3))))
    await index.apply(timeline.from_audit(record("memo-2", 2, "review.requested", T0 + timedelta(minutes=4))))

    assert await ids(index, TaskFilter()) == ["memo-2", "memo-1", "claim-2", "claim-1"], "the latest opened first"
    assert await ids(index, TaskFilter(status="running")) == ["memo-1"]
    assert await ids(index, TaskFilter(status="in_review")) == ["memo-2"]
    assert await ids(index, TaskFilter(status="rejected")) == ["claim-2"]
    assert await ids(index, TaskFilter(workflow="expense")) == ["claim-2", "claim-1"]
    assert await ids(index, TaskFilter(agent="auditor")) == ["claim-2"]
    assert await ids(index, TaskFilter(agent="intake", status="completed")) == ["claim-1"], "every filter holds"
    assert await ids(index, TaskFilter(workflow="memo", agent="intake")) == []
    minute = int((T0 + timedelta(minutes=1)).timestamp() * 1000)
    assert await ids(index, TaskFilter(since_ms=minute)) == ["memo-2", "memo-1", "claim-2"]
    assert await ids(index, TaskFilter(until_ms=minute)) == ["claim-2", "claim-1"]
    assert await ids(index, TaskFilter(since_ms=minute, until_ms=minute)) == ["claim-2"]
    assert await ids(index, TaskFilter(q="memo")) == ["memo-2", "memo-1"], "a task id prefix"
    assert await ids(index, TaskFilter(q="LIMIT")) == ["claim-2"], "text in the reason"
    assert await ids(index, TaskFilter(q="expen")) == ["claim-2", "claim-1"], "text in the workflow"

    # A total where it is cheap (one sorted set), none where it would take reading them all.
    assert (await index.tasks(TaskFilter(workflow="expense"), None, 1)).total == 2
    assert (await index.tasks(TaskFilter(since_ms=minute), None, 1)).total == 3
    assert (await index.tasks(TaskFilter(workflow="expense", agent="intake"), None, 1)).total is None
    assert (await index.tasks(TaskFilter(q="memo"), None, 1)).total is None


async def test_moving_status_moves_the_task_between_indexes(index: TaskIndex) -> None:
    await run_task(index, "t-5", T0, end="failed")
    assert await ids(index, TaskFilter(status="failed")) == ["t-5"]
    resumed = record("t-5", 4, "task.resumed", T0 + timedelta(minutes=5), actor="operator:ops")
    await index.apply(timeline.from_audit(resumed))
    assert await ids(index, TaskFilter(status="failed")) == []
    assert await ids(index, TaskFilter(status="running")) == ["t-5"]
    summary = await index.summary("t-5")
    assert summary is not None and "ended_ms" not in summary


async def test_pages_follow_the_cursor_without_repeats_or_gaps_even_on_equal_times(index: TaskIndex) -> None:
    # 23 tasks, several opened in the same millisecond: the cursor breaks ties by id.
    expected = []
    for i in range(23):
        task_id = f"p-{i:02d}"
        await run_task(index, task_id, T0 + timedelta(seconds=i // 3), end="completed" if i % 2 else "failed")
        expected.append(task_id)
    expected = sorted(expected, key=lambda t: (int(t[2:]) // 3, t), reverse=True)

    seen: list[str] = []
    cursor: Cursor | None = None
    pages = 0
    while True:
        page = await index.tasks(TaskFilter(), cursor, 5)
        seen += [s["task_id"] for s in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = Cursor.decode(page.next_cursor)
    assert seen == expected and pages == 5
    assert page.total == 23

    failed: list[str] = []
    cursor = None
    while True:
        page = await index.tasks(TaskFilter(status="failed"), cursor, 4)
        failed += [s["task_id"] for s in page.items]
        if page.next_cursor is None:
            break
        cursor = Cursor.decode(page.next_cursor)
    assert failed == [t for t in expected if int(t[2:]) % 2 == 0]


async def test_a_rare_match_is_searched_a_bounded_window_at_a_time(index: TaskIndex) -> None:
    for i in range(120):
        await run_task(index, f"n-{i:03d}", T0 + timedelta(seconds=i), reason="needle" if i == 3 else "hay")
    page = await index.tasks(TaskFilter(q="needle"), None, 10)
    assert page.items == [] and page.examined == 50 and page.next_cursor is not None, "cut at max_examined"
    found: list[str] = []
    while page.next_cursor is not None:
        page = await index.tasks(TaskFilter(q="needle"), Cursor.decode(page.next_cursor), 10)
        found += [s["task_id"] for s in page.items]
    assert found == ["n-003"]


async def test_expired_tasks_drop_out_of_the_lists(index: TaskIndex, redis_url: str) -> None:
    await run_task(index, "gone", T0)
    await run_task(index, "kept", T0 + timedelta(seconds=1))
    redis = connect_redis(redis_url)
    try:
        assert 0 < await redis.ttl(index._key("task", "gone")) <= index.finished_ttl_s
        await redis.delete(index._key("task", "gone"))  # as its expiry would
    finally:
        await redis.aclose()
    assert await ids(index, TaskFilter()) == ["kept"]
    assert await ids(index, TaskFilter(status="completed")) == ["kept"]


def letter(n: int, task_id: str | None, error_type: str = "malformed") -> DeadLetter:
    return DeadLetter(
        message_id=f"dl-{n}",
        reason=f"reason {n}: not JSON" if error_type == "malformed" else f"reason {n}",
        error_type=error_type,
        source_topic="handrail.tasks",
        partition=0,
        offset=n,
        original="e30=",
        task_id=task_id,
        service="router",
        dead_lettered_at=T0 + timedelta(seconds=n),
    )


async def test_dead_letters_are_listed_with_reasons_and_join_their_task(index: TaskIndex) -> None:
    await run_task(index, "d-1", T0, end=None)
    for n, (task_id, error_type) in enumerate([("d-1", "malformed"), (None, "malformed"), ("d-2", "too_large")]):
        assert await index.add_dead_letter(letter(n, task_id, error_type))
        assert not await index.add_dead_letter(letter(n, task_id, error_type)), "a second copy is the same letter"
        if task_id:
            await index.apply(timeline.from_dead_letter(letter(n, task_id, error_type), task_id))
            await index.apply(timeline.from_dead_letter(letter(n, task_id, error_type), task_id))
    page = await index.dead_letters(DeadLetterFilter(), None, 10)
    assert [d["message_id"] for d in page.items] == ["dl-2", "dl-1", "dl-0"] and page.total == 3
    assert page.items[0]["reason"] == "reason 2" and "original" not in page.items[0]
    malformed = await index.dead_letters(DeadLetterFilter(error_type="malformed"), None, 10)
    assert [d["message_id"] for d in malformed.items] == ["dl-1", "dl-0"] and malformed.total is None
    assert [d["message_id"] for d in (await index.dead_letters(DeadLetterFilter(q="d-1"), None, 10)).items] == ["dl-0"]
    first = await index.dead_letters(DeadLetterFilter(), None, 2)
    assert first.next_cursor is not None
    rest = await index.dead_letters(DeadLetterFilter(), Cursor.decode(first.next_cursor), 2)
    assert [d["message_id"] for d in rest.items] == ["dl-0"] and rest.next_cursor is None

    summary = await index.summary("d-1")
    assert summary is not None and summary["dead_letters"] == "1"
    assert (await index.timeline("d-1"))[-1]["kind"] == "dead_letter"


async def test_offsets_count_only_under_the_generation_they_were_stored_with(index: TaskIndex) -> None:
    await index.checkpoint({"audit:0": 12, "dlq:1": 3}, "g1")
    assert await index.resume_offsets("g1") == {"audit:0": 12, "dlq:1": 3}
    assert await index.resume_offsets("g2") == {}, "Redis was rebuilt meanwhile: read everything again"


def test_a_cursor_is_checked() -> None:
    cursor = Cursor(1764579600000.0, "task:with:colons")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "nope", "12", "x:1", "-1:a", "１２:a", "1" * 17 + ":a"):
        with pytest.raises(ValueError):
            Cursor.decode(bad)


def test_the_trace_id_comes_from_traceparent() -> None:
    header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert timeline.trace_id_of([("traceparent", header)]) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert timeline.trace_id_of([("x", b"y")]) == ""
    assert timeline.trace_id_of([("traceparent", b"garbage")]) == ""
