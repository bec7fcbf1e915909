"""The back-off every retry shares (model calls and tool calls): doubling ceilings, a cap, jitter, bounds."""

from __future__ import annotations

import random

import pytest

from handrail.backoff import Backoff
from handrail.contracts.tools import ToolPolicy
from handrail.llm.retry import RetryPolicy


def test_without_jitter_the_waits_double_up_to_the_cap() -> None:
    backoff = Backoff(max_attempts=6, base_delay_s=0.1, max_delay_s=0.5, jitter=False)
    assert [backoff.next_delay_s(n, elapsed_s=0) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.5, 0.5, None]


def test_with_jitter_each_wait_is_drawn_below_its_ceiling() -> None:
    backoff = Backoff(max_attempts=10, base_delay_s=0.1, max_delay_s=0.5, rng=random.Random(3))
    waits = [backoff.backoff_s(n) for n in range(1, 8) for _ in range(20)]
    assert all(0 <= w <= 0.5 for w in waits) and len(set(waits)) > 100
    assert max(backoff.backoff_s(1) for _ in range(50)) <= 0.1


def test_no_attempt_starts_past_the_time_allowed() -> None:
    backoff = Backoff(max_attempts=5, base_delay_s=1.0, max_delay_s=1.0, max_total_s=2.5, jitter=False)
    assert backoff.next_delay_s(1, elapsed_s=1.0) == 1.0
    assert backoff.next_delay_s(2, elapsed_s=2.0) is None


def test_a_tool_policy_and_a_model_retry_policy_are_the_same_back_off() -> None:
    policy = ToolPolicy(max_attempts=4, base_delay_s=0.05, max_delay_s=0.1, jitter=False).backoff()
    assert [policy.next_delay_s(n, 0) for n in (1, 2, 3, 4)] == [0.05, 0.1, 0.1, None]
    assert isinstance(RetryPolicy(), Backoff) and RetryPolicy().max_total_s == 60.0


def test_impossible_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        Backoff(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        Backoff(base_delay_s=-1)
