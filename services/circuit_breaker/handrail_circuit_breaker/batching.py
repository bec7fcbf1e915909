"""Coalescing the Redis writes of concurrently handled messages: one round trip per batch, not one per message.

The circuit-breaker handles hundreds of decision events concurrently. Each handler hands
its items (a breaker's outcomes, a task's figures) to a ``Coalescer`` and waits; the
coalescer lingers a moment so that the handlers running at the same time join, then
writes every item of the batch in arrival order in one pipelined round trip. Each handler
gets back the results of its own items, and its offset is committed only after that, so a
crash loses nothing.

- ``OutcomeBatcher``: call outcomes into the breakers (``ControlStore.record_outcomes``: one
  script per breaker runs its outcomes in order, so each counts exactly as alone);
- the baseline watcher's figures (``BaselineStore.observe_all``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from handrail.state.controls import BreakerPolicy, BreakerState, ControlStore

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")

#: One call's outcome on one breaker: scope, name, ok, when (ms).
Outcome = tuple[str, str, bool, int]

#: How long a batch waits for concurrent handlers to join it: far below any breaker's window.
LINGER_S = 0.002
#: A batch is sent at once when it holds this many items.
MAX_BATCH = 1024


class Coalescer(Generic[I, R]):
    """Runs the items handed in at the same moment as one batch: ``write(items)`` returns a result per item."""

    def __init__(
        self, write: Callable[[list[I]], Awaitable[list[R]]], name: str, *, linger_s: float = LINGER_S
    ) -> None:
        self._write = write
        self._name = name
        self._linger_s = linger_s
        self._pending: list[tuple[list[I], asyncio.Future[list[R]]]] = []
        self._size = 0
        self._flusher: asyncio.Task[None] | None = None
        self._full = asyncio.Event()
        #: The largest batch sent so far (a benchmark and a test read it).
        self.largest_batch = 0

    async def submit(self, items: list[I]) -> list[R]:
        """Write ``items`` with the others of this moment; their results, in order."""
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        self._size += len(items)
        if self._size >= MAX_BATCH:
            self._full.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        return await future

    async def _flush(self) -> None:
        while self._pending:
            self._full.clear()
            if self._size < MAX_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._linger_s)
            batch, self._pending, self._size = self._pending, [], 0
            flat = [item for items, _ in batch for item in items]
            self.largest_batch = max(self.largest_batch, len(flat))
            try:
                results = await self._write(flat)
            except Exception as exc:  # Redis away: every handler of the batch is retried
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(results[start : start + len(items)])
                start += len(items)


class OutcomeBatcher(Coalescer[Outcome, BreakerState | None]):
    """Coalesces the outcomes of concurrently handled events into one round trip per batch."""

    def __init__(self, controls: ControlStore, policy: BreakerPolicy, *, linger_s: float = LINGER_S) -> None:
        super().__init__(
            lambda outcomes: controls.record_outcomes(outcomes, policy), "breaker-outcomes", linger_s=linger_s
        )

    async def record(self, outcomes: list[Outcome]) -> list[BreakerState | None]:
        """Count ``outcomes`` with the others of this moment; the new state of each breaker that changed."""
        return await self.submit(outcomes)
