"""Counting the outcomes of many events at once: one Redis round trip per batch, not two per event.

The circuit-breaker handles hundreds of decision events concurrently. Each handler
hands its outcomes to the ``OutcomeBatcher`` and waits; the batcher lingers a moment
so that the handlers running at the same time join, then applies every outcome of
the batch in arrival order in one pipelined round trip (``ControlStore.record_outcomes``:
one script per breaker runs its outcomes in order, so each counts exactly as alone).
Each handler gets back the state changes of its own outcomes, and its offset is
committed only after that, so a crash loses no outcome.
"""

from __future__ import annotations

import asyncio
import contextlib

from handrail.state.controls import BreakerPolicy, BreakerState, ControlStore

#: One call's outcome on one breaker: scope, name, ok, when (ms).
Outcome = tuple[str, str, bool, int]

#: How long a batch waits for concurrent handlers to join it: far below any breaker's window.
LINGER_S = 0.002
#: A batch is sent at once when it holds this many outcomes.
MAX_BATCH = 1024


class OutcomeBatcher:
    """Coalesces the outcomes of concurrently handled events into one round trip per batch."""

    def __init__(self, controls: ControlStore, policy: BreakerPolicy, *, linger_s: float = LINGER_S) -> None:
        self._controls = controls
        self._policy = policy
        self._linger_s = linger_s
        self._pending: list[tuple[list[Outcome], asyncio.Future[list[BreakerState | None]]]] = []
        self._size = 0
        self._flusher: asyncio.Task[None] | None = None
        self._full = asyncio.Event()
        #: The largest batch sent so far (a benchmark and a test read it).
        self.largest_batch = 0

    async def record(self, outcomes: list[Outcome]) -> list[BreakerState | None]:
        """Count ``outcomes`` with the others of this moment; the new state of each breaker that changed."""
        future: asyncio.Future[list[BreakerState | None]] = asyncio.get_running_loop().create_future()
        self._pending.append((outcomes, future))
        self._size += len(outcomes)
        if self._size >= MAX_BATCH:
            self._full.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="breaker-outcomes")
        return await future

    async def _flush(self) -> None:
        while self._pending:
            self._full.clear()
            if self._size < MAX_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._linger_s)
            batch, self._pending, self._size = self._pending, [], 0
            flat = [outcome for outcomes, _ in batch for outcome in outcomes]
            self.largest_batch = max(self.largest_batch, len(flat))
            try:
                changed = await self._controls.record_outcomes(flat, self._policy)
            except Exception as exc:  # Redis away: every handler of the batch is retried
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for outcomes, future in batch:
                if not future.done():
                    future.set_result(changed[start : start + len(outcomes)])
                start += len(outcomes)
