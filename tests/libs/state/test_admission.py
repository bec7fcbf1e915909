"""Admitting a call in one round trip, on real Redis: each check stops it, and a stopped call reserves nothing."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from handrail.state import generation
from handrail.state.admission import Admissions, Admit, LoopWindow
from handrail.state.budgets import Amount, BudgetStore, Caps, Settlement, Verdict
from handrail.state.controls import BreakerPolicy, ControlStore

pytestmark = pytest.mark.bus

CAPS = Caps(tokens=1000, cost_usd=1.0, steps=10)


@dataclass
class Stores:
    redis: aioredis.Redis
    budgets: BudgetStore
    controls: ControlStore
    admissions: Admissions


@pytest.fixture
async def stores(state_redis: aioredis.Redis) -> Stores:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(state_redis, prefix)
    budgets, controls = BudgetStore(state_redis, prefix), ControlStore(state_redis, prefix)
    await budgets.open("task", CAPS, int(time.time() * 1000) + 60_000)
    return Stores(state_redis, budgets, controls, Admissions(state_redis, budgets, controls, prefix))


def now_ms() -> int:
    return int(time.time() * 1000)


async def reserved_tokens(stores: Stores) -> int:
    return int(await stores.redis.hget(stores.budgets.keys("task")[0], "rsv:tokens") or 0)


async def test_a_call_every_check_lets_through_is_reserved(stores: Stores) -> None:
    admitted = await stores.admissions.admit(
        "task", "agent-a", "r1", Amount(tokens=100), CAPS, now_ms(), breaker=("agent", "agent-a")
    )
    assert admitted.outcome == Admit.RESERVED
    assert await reserved_tokens(stores) == 100
    await stores.budgets.settle("task", "r1", Amount(tokens=40), "agent-a")
    assert (await stores.budgets.usage("task")).tokens == 40 and await reserved_tokens(stores) == 0


async def test_a_halt_stops_the_call_and_says_who_halted_it(stores: Stores) -> None:
    await stores.controls.halt("agent", "agent-a", "bad outputs", "operator:ana")
    admitted = await stores.admissions.admit("task", "agent-a", "r1", Amount(tokens=100), CAPS, now_ms())
    assert admitted.outcome == Admit.HALTED and admitted.halt is not None
    assert admitted.halt.by == "operator:ana"
    assert admitted.halt.reason == "agent agent-a halted by operator:ana: bad outputs"
    assert await reserved_tokens(stores) == 0


async def test_an_open_agent_breaker_halts_and_an_open_tool_breaker_short_circuits(stores: Stores) -> None:
    policy = BreakerPolicy(failure_ratio=0.5, min_calls=1, window_s=60, cooldown_s=60)
    await stores.controls.record_outcome("agent", "agent-a", False, policy, now_ms())
    await stores.controls.record_outcome("tool", "flaky", False, policy, now_ms())
    model = await stores.admissions.admit(
        "task", "agent-a", "r1", Amount(tokens=100), CAPS, now_ms(), breaker=("agent", "agent-a")
    )
    assert model.outcome == Admit.BREAKER_OPEN
    tool = await stores.admissions.admit(
        "task", "agent-b", "r2", Amount(cost_usd=0.1), CAPS, now_ms(), breaker=("tool", "flaky")
    )
    assert tool.outcome == Admit.SHORT_CIRCUITED
    other = await stores.admissions.admit(
        "task", "agent-b", "r3", Amount(cost_usd=0.1), CAPS, now_ms(), breaker=("tool", "steady")
    )
    assert other.outcome == Admit.RESERVED
    assert (await stores.budgets.usage("task")).cost_usd == 0 and await reserved_tokens(stores) == 0


async def test_the_same_tool_call_once_too_often_is_a_loop_and_a_redelivered_one_counts_once(stores: Stores) -> None:
    outcomes = []
    for n in (1, 2, 2, 3):  # call 2 asked twice (a redelivered step): counted once
        loop = LoopWindow("lookup", "h", f"m/{n}", window_s=60, limit=2)
        admitted = await stores.admissions.admit(
            "task", "agent-a", f"r{n}", Amount(), CAPS, now_ms(), breaker=("tool", "lookup"), loop=loop
        )
        outcomes.append((admitted.outcome, admitted.repeats))
    assert outcomes == [(Admit.RESERVED, 0), (Admit.RESERVED, 0), (Admit.RESERVED, 0), (Admit.LOOP_DETECTED, 3)]


async def test_a_call_the_budget_cannot_hold_is_refused_with_the_cap_it_would_pass(stores: Stores) -> None:
    admitted = await stores.admissions.admit("task", "agent-a", "r1", Amount(tokens=5000), CAPS, now_ms())
    assert admitted.outcome == Admit.REFUSED and admitted.reservation is not None
    assert (admitted.reservation.verdict, admitted.reservation.scope, admitted.reservation.dimension) == (
        Verdict.EXHAUSTED,
        "task",
        "tokens",
    )


async def test_the_previous_call_is_settled_in_the_next_admission_and_the_last_with_the_read(
    stores: Stores,
) -> None:
    first = await stores.admissions.admit("task", "agent-a", "r1", Amount(tokens=300), CAPS, now_ms())
    assert first.outcome == Admit.RESERVED
    # 300 reserved + 800 would pass the cap of 1000, but the first call really used 40: settled first, it fits.
    settled = Settlement("r1", Amount(tokens=40), "agent-a")
    second = await stores.admissions.admit("task", "agent-a", "r2", Amount(tokens=800), CAPS, now_ms(), settle=settled)
    assert second.outcome == Admit.RESERVED
    assert await reserved_tokens(stores) == 800
    usage = await stores.budgets.settle_and_usage("task", Settlement("r2", Amount(tokens=500), "agent-a"))
    assert (usage.tokens, await reserved_tokens(stores)) == (540, 0)


async def test_a_halted_call_still_settles_the_one_before(stores: Stores) -> None:
    await stores.admissions.admit("task", "agent-a", "r1", Amount(tokens=300), CAPS, now_ms())
    await stores.controls.halt("task", "task", "stop", "operator:ana")
    settled = Settlement("r1", Amount(tokens=70), "agent-a")
    halted = await stores.admissions.admit("task", "agent-a", "r2", Amount(tokens=10), CAPS, now_ms(), settle=settled)
    assert halted.outcome == Admit.HALTED
    assert (await stores.budgets.usage("task")).tokens == 70 and await reserved_tokens(stores) == 0
