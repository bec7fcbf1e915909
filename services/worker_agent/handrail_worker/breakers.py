"""The model chain's breakers, read from Redis where the circuit-breaker service keeps them.

The service decides (it sees every worker's decision events); a worker only
asks before each attempt, so an open model breaker sends the chain to the
next model instead of halting the task.
"""

from __future__ import annotations

import time

from handrail.llm.breaker import BreakerState as ChainBreakerState
from handrail.state.controls import BreakerState, ControlStore


class SharedModelBreakers:
    """``BreakerBoard`` over the shared, Redis-held model breakers."""

    def __init__(self, controls: ControlStore) -> None:
        self.controls = controls

    async def allow(self, model: str) -> bool:
        state = await self.controls.breaker_allows("model", model, int(time.time() * 1000))
        return state != BreakerState.OPEN

    async def record(self, model: str, ok: bool) -> None:
        return None  # the circuit-breaker service records outcomes from the decision events

    async def state(self, model: str) -> ChainBreakerState:
        return ChainBreakerState((await self.controls.breaker_state("model", model)).value)
