"""The task record on real Redis: reopening an ended task for another run (``handrail task resume``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from handrail.state import TaskStore, connect_redis, generation
from handrail.state.tasks import Reopening

pytestmark = pytest.mark.bus

HEAD, CHECKPOINT = "a" * 64, "b" * 64


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[TaskStore]:
    client, prefix = connect_redis(redis_url), f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(client, prefix)
    yield TaskStore(client, prefix=prefix)
    await client.aclose()


async def ended(store: TaskStore, status: str) -> str:
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    await store.open(task_id, "expense-approval", "tasks:0:1", HEAD, "now")
    assert (await store.finish(task_id, "expense-approval", status, "result-1", "now")).first
    return task_id


async def test_a_failed_task_reopens_once_per_run_and_its_next_result_supersedes_the_first(store: TaskStore) -> None:
    task_id = await ended(store, "failed")
    reopened = await store.reopen(task_id, 2, CHECKPOINT, "now")
    assert reopened.outcome == Reopening.REOPENED and reopened.detail == "result-1"
    record = await store.get(task_id)
    assert record["status"] == "running" and record["head"] == CHECKPOINT and "result_id" not in record
    assert await store._redis.ttl(store.keys(task_id)[0]) == -1, "a running task's record does not expire"

    again = await store.reopen(task_id, 2, CHECKPOINT, "now")
    assert again.outcome == Reopening.ALREADY, "the same run asked for twice is started once"
    skipped = await store.reopen(task_id, 4, CHECKPOINT, "now")
    assert skipped.outcome == Reopening.NOT_RESUMABLE and skipped.detail == "running"

    finished = await store.finish(task_id, "expense-approval", "completed", "result-2", "now")
    assert finished.first and finished.epoch == 2 and finished.supersedes == "result-1"
    late = await store.reopen(task_id, 2, CHECKPOINT, "now")
    assert late.outcome == Reopening.ALREADY, "a resume of run 2 that comes after it ended does nothing more"
    assert (await store.reopen(task_id, 3, CHECKPOINT, "now")).outcome == Reopening.NOT_RESUMABLE


@pytest.mark.parametrize("status", ["completed", "rejected"])
async def test_completed_and_rejected_tasks_are_final(store: TaskStore, status: str) -> None:
    task_id = await ended(store, status)
    refused = await store.reopen(task_id, 2, CHECKPOINT, "now")
    assert refused.outcome == Reopening.NOT_RESUMABLE and refused.detail == status
    assert (await store.get(task_id))["status"] == status


async def test_a_stale_run_and_an_unknown_task_are_refused(store: TaskStore) -> None:
    task_id = await ended(store, "halted")
    assert (await store.reopen(task_id, 3, CHECKPOINT, "now")).outcome == Reopening.STALE
    assert (await store.reopen(task_id, 2, CHECKPOINT, "now")).outcome == Reopening.REOPENED
    assert (await store.finish(task_id, "expense-approval", "halted", "result-2", "now")).first
    assert (await store.reopen(task_id, 2, CHECKPOINT, "now")).outcome == Reopening.ALREADY
    stale = await store.reopen(task_id, 1, CHECKPOINT, "now")
    assert stale.outcome == Reopening.STALE and stale.detail == "2"
    assert (await store.reopen("nobody", 2, CHECKPOINT, "now")).outcome == Reopening.UNKNOWN_TASK
