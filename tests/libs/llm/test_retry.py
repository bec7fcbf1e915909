"""The retry policy: bounded attempts, jittered exponential back-off, Retry-After honoured."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from handrail.llm.errors import ModelRateLimited, ModelRequestRejected, ModelServerError, ModelTimeout
from handrail.llm.retry import RetryPolicy, parse_retry_after

SERVER_ERROR = ModelServerError("boom", model="m", provider="p", status=500)


def policy(**overrides: float) -> RetryPolicy:
    values = {"max_attempts": 4, "base_delay_s": 1.0, "max_delay_s": 5.0, "max_total_s": 100.0, **overrides}
    return RetryPolicy(rng=random.Random(7), **values)  # type: ignore[arg-type]


def test_backoff_is_jittered_below_a_doubling_ceiling_capped_at_max_delay() -> None:
    retry = policy()
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = {retry.backoff_s(attempt) for _ in range(200)}
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spans the range
        assert len(delays) > 100  # and is not a constant


def test_attempts_are_bounded() -> None:
    retry = policy(max_attempts=3)
    assert retry.delay_s(1, SERVER_ERROR, 0) is not None
    assert retry.delay_s(2, SERVER_ERROR, 0) is not None
    assert retry.delay_s(3, SERVER_ERROR, 0) is None


def test_only_retryable_errors_are_retried() -> None:
    assert policy().delay_s(1, ModelTimeout("slow", model="m", provider="p"), 0) is not None
    assert policy().delay_s(1, ModelRequestRejected("no", model="m", provider="p", status=401), 0) is None


def test_retry_after_is_honoured_and_too_long_a_pause_fails_over() -> None:
    limited = ModelRateLimited("429", model="m", provider="p", retry_after_s=3.0)
    delay = policy(max_retry_after_s=10).delay_s(1, limited, 0)
    assert delay is not None and 3.0 <= delay <= 4.0
    assert policy(max_retry_after_s=2).delay_s(1, limited, 0) is None


def test_total_time_on_a_model_is_bounded() -> None:
    limited = ModelRateLimited("429", model="m", provider="p", retry_after_s=3.0)
    assert policy(max_total_s=10).delay_s(1, limited, elapsed_s=7.5) is None
    assert policy(max_total_s=10).delay_s(1, limited, elapsed_s=5.0) is not None


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Wed, 01 Jan 2031 00:00:30 GMT"}, 30.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
        ({"retry-after": "-4"}, 0.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = datetime(2031, 1, 1, tzinfo=UTC)
    assert parse_retry_after(headers, now=now) == expected
