"""The task console's page latency on a full index: 100k synthetic tasks in real Redis.

    .venv/bin/python bench/console.py [--redis-url URL] [--tasks 100000] [--repeat 50] [--keep]

Fills the task index (``handrail_review.tasks_index``) under a fresh prefix with tasks as the
projector would fold them from the audit topic (opened, one or two steps, an end; a few
dead letters), then times the pages the console asks for: p50 / p99 / max in ms, as the API
reads them (one sorted set from a cursor, summaries in one round trip), and how many summaries
each page read. Removes its keys at the end unless ``--keep``. Run on demand, never in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from handrail.audit import AuditRecord
from handrail.messages import DeadLetter
from handrail.state import connect_redis
from handrail_review import timeline
from handrail_review.tasks_index import Cursor, DeadLetterFilter, Page, TaskFilter, TaskIndex

WORKFLOWS = ["expense-approval", "edit-expense", "quick-expense", "memo", "triage"]
AGENTS = ["expense-intake", "expense-approver", "writer", "triager", "auditor", "planner"]
#: Ends, weighted roughly as a healthy deployment sees them: most complete, a few fail or halt.
ENDS = ["completed"] * 80 + ["rejected"] * 10 + ["failed"] * 4 + ["halted"] * 2 + [None] * 4
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def records(n: int, rng: random.Random) -> list[AuditRecord]:
    task_id = f"bench-{n:06d}-{rng.randrange(16**6):06x}"
    workflow = rng.choice(WORKFLOWS)
    at = T0 + timedelta(seconds=n * 20)  # 100k tasks over about three weeks
    made = [_record(task_id, 1, "task.opened", at, "service:router", workflow)]
    for agent in rng.sample(AGENTS, rng.choice((1, 2))):
        at += timedelta(seconds=2)
        made.append(_record(task_id, len(made) + 1, "step.completed", at, f"agent:{agent}", workflow, step=True))
    end = rng.choice(ENDS)
    if end is not None:
        reason = None if end == "completed" else rng.choice(["over the limit", "loop detected", "no receipt"])
        made.append(_record(task_id, len(made) + 1, f"task.{end}", at, "service:validator", workflow, reason=reason))
    return made


def _record(
    task_id: str, seq: int, action: str, at: datetime, actor: str, workflow: str, *, step: bool = False,
    reason: str | None = None,
) -> AuditRecord:  # fmt: skip
    details: dict[str, object] = {"steps": seq - 1} if action.startswith("task.") and seq > 1 else {}
    if step:
        details = {
            "patch": [{"op": "add", "path": f"/steps/s{seq}", "value": {"decision": "approved", "amount": 120}}],
            "decisions": [
                {"kind": "model_call", "name": "scripted", "outcome": "ok", "latency_ms": 1, "input_tokens": 300},
                {"kind": "tool_call", "name": "lookup_employee", "outcome": "ok", "latency_ms": 4},
            ],
        }
    return AuditRecord(
        message_id=f"{task_id}/{seq}", task_id=task_id, seq=seq, prev_hash="0" * 64, record_hash="0" * 64,
        actor=actor, action=action, reason=reason, workflow=workflow, at=at, details=details,
        tokens=700 if step else 0, cost_usd=0.002 if step else 0.0,
    )  # fmt: skip


def letter(n: int) -> DeadLetter:
    return DeadLetter(
        message_id=f"bench-dl-{n}", reason="not a valid TaskSubmitted", error_type="malformed_message",
        source_topic="handrail.tasks", partition=n % 6, offset=n, original="e30=", task_id=None, service="router",
        dead_lettered_at=T0 + timedelta(seconds=n * 200),
    )  # fmt: skip


async def fill(index: TaskIndex, tasks: int, concurrency: int) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    queue = [records(n, rng) for n in range(tasks)]

    async def worker(lane: int) -> None:
        for made in queue[lane::concurrency]:
            for record in made:
                await index.apply(timeline.from_audit(record))

    await asyncio.gather(*(worker(lane) for lane in range(concurrency)))
    for n in range(tasks // 100):
        await index.add_dead_letter(letter(n))
    return time.perf_counter() - started


async def timed(repeat: int, page: Callable[[], Awaitable[Page[Any]]]) -> tuple[list[float], Page[Any]]:
    samples: list[float] = []
    last: Page[Any] = Page()
    for _ in range(repeat):
        started = time.perf_counter()
        last = await page()
        samples.append((time.perf_counter() - started) * 1000)
    return samples, last


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def deep(index: TaskIndex, where: TaskFilter, pages: int) -> Page[Any]:
    """The ``pages``-th page of 50, following the cursors."""
    cursor: Cursor | None = None
    page: Page[Any] = Page()
    for _ in range(pages):
        page = await index.tasks(where, cursor, 50)
        if page.next_cursor is None:
            break
        cursor = Cursor.decode(page.next_cursor)
    return page


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="keep the bench's keys (prefix printed)")
    args = parser.parse_args()

    redis = connect_redis(args.redis_url)
    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    index = TaskIndex(redis, prefix)
    try:
        took = await fill(index, args.tasks, args.concurrency)
        print(f"filled {args.tasks} tasks under {prefix!r} in {took:.1f}s ({args.tasks / took:.0f} tasks/s)")
        middle = int((T0 + timedelta(seconds=args.tasks * 10)).timestamp() * 1000)
        hour_ms = 3600 * 1000
        queries: dict[str, Callable[[], Awaitable[Page[Any]]]] = {
            "latest 50, no filter": lambda: index.tasks(TaskFilter(), None, 50),
            "status=failed": lambda: index.tasks(TaskFilter(status="failed"), None, 50),
            "workflow=memo": lambda: index.tasks(TaskFilter(workflow="memo"), None, 50),
            "agent=auditor & status=halted": lambda: index.tasks(
                TaskFilter(status="halted", agent="auditor"), None, 50
            ),
            "an hour, mid-range": lambda: index.tasks(TaskFilter(since_ms=middle, until_ms=middle + hour_ms), None, 50),
            "q=task id prefix (newest)": lambda: index.tasks(TaskFilter(q=f"bench-{args.tasks - 30:06d}"), None, 50),
            "q=reason 'loop' (bounded window)": lambda: index.tasks(TaskFilter(q="loop"), None, 50),
            "20 pages in a row, by cursor": lambda: deep(index, TaskFilter(), 20),
            "dead letters, latest 50": lambda: index.dead_letters(DeadLetterFilter(), None, 50),
        }
        print(f"\n{'page':36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'items':>6} {'read':>6} {'total':>7}")
        for name, query in queries.items():
            repeat = max(3, args.repeat // 10) if name.startswith("20 pages") else args.repeat
            samples, page = await timed(repeat, query)
            total = "-" if page.total is None else str(page.total)
            print(
                f"{name:36} {statistics.median(samples):8.2f} {pct(samples, 0.99):8.2f} {max(samples):8.2f} "
                f"{len(page.items):6} {page.examined:6} {total:>7}"
            )
        used = await redis.info("memory")
        print(f"\nRedis used_memory: {int(used['used_memory']) / 2**20:.0f} MiB (the whole server, not only the bench)")
    finally:
        if not args.keep:
            async for keys in _batches(redis, f"{prefix}*"):
                await redis.unlink(*keys)
        await redis.aclose()


async def _batches(redis: aioredis.Redis, pattern: str) -> AsyncIterator[list[str]]:
    batch: list[str] = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            yield batch
            batch = []
    if batch:
        yield batch


if __name__ == "__main__":
    asyncio.run(main())
