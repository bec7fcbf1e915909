"""When to ask the same model again, and after how long.

Whether an error is worth another attempt is the error's own ``retryable``
flag (``handrail.llm.errors``); this module only bounds the attempts and picks
the wait: full-jitter exponential back-off (``handrail.backoff``), or the server's ``Retry-After``
when it sent one (plus a little jitter, so replicas do not return in step).
A wait that would overrun ``max_total_s``, or a ``Retry-After`` longer than
``max_retry_after_s``, ends the retries: the chain moves on to the next model
rather than hold the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from handrail.backoff import Backoff
from handrail.llm.errors import ModelError, ModelRateLimited


@dataclass(frozen=True)
class RetryPolicy(Backoff):
    """Bounds for the attempts on one model within one call: ``Backoff``, with the server's ``Retry-After``."""

    #: Time on one model, waits included, after which no new attempt starts.
    max_total_s: float = 60.0
    #: A server asking for a longer pause than this gets skipped for the next model instead.
    max_retry_after_s: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_retry_after_s < 0:
            raise ValueError("delays must not be negative")

    def delay_s(self, attempt: int, error: ModelError, elapsed_s: float) -> float | None:
        """How long to wait before attempt ``attempt + 1``, or None when there is to be none."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        retry_after_s = error.retry_after_s if isinstance(error, ModelRateLimited) else None
        if retry_after_s is not None:
            if retry_after_s > self.max_retry_after_s:
                return None
            # Honour the server's wait; the jitter only spreads the returning replicas.
            delay_s = retry_after_s + self.rng.uniform(0, min(self.base_delay_s, 1.0))
        else:
            delay_s = self.backoff_s(attempt)
        if elapsed_s + delay_s > self.max_total_s:
            return None
        return delay_s


def parse_retry_after(headers: dict[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if any.

    ``headers`` has lower-case names. Unparseable values are ignored: the back-off applies.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
