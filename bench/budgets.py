"""Budget reserve+settle round trips against real Redis.

    .venv/bin/python bench/budgets.py [--redis-url URL] [--ops 20000] [--concurrency 32]

Measures, from Python, one reserve followed by its settle (two Lua calls):
latency p50/p99 sequentially, and ops/s with many calls in flight, on a single
task (every call contends for one hash) and spread over many tasks. The
baseline, in the same process, is a bare ``PING`` round trip: the floor any
Redis call pays. Target: p50 under 0.3 ms per reserve+settle.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from handrail.state import connect_redis, generation
from handrail.state.budgets import Amount, BudgetStore, Caps

UNLIMITED = Caps(tokens=10**15, cost_usd=10**9, steps=10**9)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential(store: BudgetStore, task_ids: list[str], ops: int) -> list[float]:
    now_ms = int(time.time() * 1000)
    latencies = []
    for i in range(ops):
        task_id = task_ids[i % len(task_ids)]
        started = time.perf_counter()
        await store.reserve(task_id, f"r{i}", "agent", Amount(tokens=10, cost_usd=0.0001), UNLIMITED, now_ms)
        await store.settle(task_id, f"r{i}", Amount(tokens=8, cost_usd=0.0001))
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def concurrent(store: BudgetStore, task_ids: list[str], ops: int, concurrency: int) -> float:
    now_ms = int(time.time() * 1000)
    queue = iter(range(ops))

    async def worker() -> None:
        for i in queue:
            task_id = task_ids[i % len(task_ids)]
            await store.reserve(task_id, f"c{i}", "agent", Amount(tokens=10), UNLIMITED, now_ms)
            await store.settle(task_id, f"c{i}", Amount(tokens=8))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ops / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    redis = connect_redis(args.redis_url)
    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    await generation.stamp(redis, prefix)  # a namespace of its own, empty on purpose
    store = BudgetStore(redis, prefix)
    deadline_ms = int(time.time() * 1000) + 3_600_000
    single = [f"one-{uuid.uuid4().hex[:6]}"]
    many = [f"many-{i}-{uuid.uuid4().hex[:6]}" for i in range(1000)]
    for task_id in single + many:
        await store.open(task_id, UNLIMITED, deadline_ms)
    await sequential(store, single, 500)  # warm up: scripts loaded, connections open

    pings = []
    for _ in range(args.ops):
        started = time.perf_counter()
        await redis.ping()
        pings.append((time.perf_counter() - started) * 1000)

    print(f"reserve+settle, {args.ops} ops each, Redis at {args.redis_url}")
    print(f"{'':26}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    print(f"{'PING (baseline)':26}{pct(pings, 0.5):9.3f}{pct(pings, 0.99):9.3f}{statistics.fmean(pings):9.3f}")
    for label, tasks in (("single task", single), ("1000 tasks", many)):
        lat = await sequential(store, tasks, args.ops)
        print(
            f"{label + ' (sequential)':26}{pct(lat, 0.5):9.3f}{pct(lat, 0.99):9.3f}{statistics.fmean(lat):9.3f}"
            f"   = {pct(lat, 0.5) / pct(pings, 0.5):.2f}x PING p50"
        )
    for label, tasks in (("single task", single), ("1000 tasks", many)):
        rate = await concurrent(store, tasks, args.ops, args.concurrency)
        print(f"{label:14} {args.concurrency} in flight: {rate:10,.0f} reserve+settle/s")
    print("target: p50 under 0.3 ms per reserve+settle")

    keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
    for i in range(0, len(keys), 500):
        await redis.delete(*keys[i : i + 500])
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
