"""The review service's background work: the projector and the deadline sweeper, started and stopped with the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from handrail_review.handlers import ReviewDesk

log = logging.getLogger(__name__)


class Background:
    """Runs coroutines for the app's lifetime; a crashed one is logged, never silently gone."""

    def __init__(self, *jobs: Callable[[], Awaitable[None]]) -> None:
        self._jobs = jobs
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for job in self._jobs:
            task: asyncio.Task[None] = asyncio.ensure_future(job())
            task.add_done_callback(_report)
            self._tasks.append(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background job stopped", exc_info=task.exception())


def sweeper(desk: ReviewDesk, ready: asyncio.Event, interval_s: float) -> Callable[[], Awaitable[None]]:
    """Every ``interval_s``, once the index is rebuilt: default actions on overdue reviews, unfinished decisions."""

    async def sweep_forever() -> None:
        await ready.wait()
        while True:
            try:
                await desk.sweep()
            except Exception:  # Redis or Kafka away for a moment: the next sweep does it
                log.exception("review sweep failed; trying again in %.1fs", interval_s)
            await asyncio.sleep(interval_s)

    return sweep_forever
