"""Per-model circuit breakers, as the model chain sees them.

``BreakerBoard`` is the small protocol the chain needs; the in-memory board
here serves one process (a worker's replicas each keep their own), and a
Redis-backed board shared by every replica and the circuit-breaker service
plugs in through the same protocol.

States: ``closed`` (calls flow; consecutive failures are counted), ``open``
(after ``failure_threshold`` consecutive failures: no calls for ``open_s``),
``half_open`` (the cool-down passed: one probe call at a time; its success
closes the breaker, its failure opens it again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class BreakerState(StrEnum):
    """A breaker's state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerBoard(Protocol):
    """The breakers of the models a chain may call."""

    async def allow(self, model: str) -> bool:
        """Whether a call to ``model`` may go out now (a half-open breaker lets one probe through)."""
        ...

    async def record(self, model: str, ok: bool) -> None:
        """Record the outcome of a call that ``allow`` let through."""
        ...

    async def state(self, model: str) -> BreakerState:
        """The breaker's state now."""
        ...


@dataclass
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False


class InMemoryBreakerBoard:
    """Breakers in this process's memory: open after consecutive failures, probe after a cool-down."""

    def __init__(
        self, failure_threshold: int = 5, open_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failure_threshold < 1 or open_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and open_s > 0")
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}

    def _get(self, model: str) -> _Breaker:
        breaker = self._breakers.setdefault(model, _Breaker())
        if breaker.state == BreakerState.OPEN and self._clock() - breaker.opened_at >= self.open_s:
            breaker.state, breaker.probing = BreakerState.HALF_OPEN, False
        return breaker

    async def allow(self, model: str) -> bool:
        breaker = self._get(model)
        if breaker.state == BreakerState.CLOSED:
            return True
        if breaker.state == BreakerState.HALF_OPEN and not breaker.probing:
            breaker.probing = True
            return True
        return False

    async def record(self, model: str, ok: bool) -> None:
        breaker = self._get(model)
        if ok:
            breaker.state, breaker.failures, breaker.probing = BreakerState.CLOSED, 0, False
            return
        breaker.failures += 1
        if breaker.state == BreakerState.HALF_OPEN or breaker.failures >= self.failure_threshold:
            breaker.state, breaker.opened_at, breaker.probing = BreakerState.OPEN, self._clock(), False

    async def state(self, model: str) -> BreakerState:
        return self._get(model).state
