"""Watching the state generation in every service, and rebuilding when it is gone.

Each service runs one ``StateKeeper``. It checks the marker every
``poll_s`` (and at start-up, before the consumers start); when it is gone,
one process takes the rebuild lock and rebuilds from Kafka while every other
waits (workers always wait: a service rebuilds). Meanwhile each guarded script refuses to run (``StateLost``) and its
message is tried again later: the platform fails closed, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from handrail.errors import HandrailError
from handrail.metrics import STATE_REBUILDS
from handrail.recovery.rebuild import Rebuilder, RebuildReport
from handrail.state import generation as gen

log = logging.getLogger(__name__)

#: How long a process waits between looks at a lock another process holds.
_WAIT_S = 0.2


class StateKeeper:
    """Keeps one Redis namespace (``prefix``) holding state rebuilt from Kafka."""

    def __init__(
        self, redis: aioredis.Redis, prefix: str, rebuilder: Rebuilder, *, poll_s: float = 0.5, may_rebuild: bool = True
    ) -> None:
        self.redis = redis
        #: False in workers: they wait for a service to rebuild (their Redis user may not write it all).
        self.may_rebuild = may_rebuild
        self.prefix = prefix
        self.rebuilder = rebuilder
        self.poll_s = poll_s
        self.generation: str | None = None
        self._watch: asyncio.Task[None] | None = None

    async def ensure(self) -> RebuildReport | None:
        """Return once Redis holds a state generation; rebuild it here if no other process is.

        The report when this process rebuilt, None when the state was there (or another rebuilt it).
        """
        while (found := await gen.current(self.redis, self.prefix)) is None:
            if not self.may_rebuild:
                await asyncio.sleep(_WAIT_S)  # a service rebuilds; its scripts refuse until then
                continue
            token = await gen.try_lock(self.redis, self.prefix, self.rebuilder.lock_ttl_s)
            if token is None:
                await asyncio.sleep(_WAIT_S)  # another process is rebuilding
                continue
            log.warning("Redis has lost its state (no %s): rebuilding it from Kafka", gen.marker_key(self.prefix))
            started = time.monotonic()
            try:
                report = await self.rebuilder.rebuild(token)
            except BaseException:
                with contextlib.suppress(Exception):
                    await gen.release(self.redis, self.prefix, token)
                raise
            STATE_REBUILDS.labels("done").inc()
            log.warning("%s (%.2fs after the loss was seen)", report.describe(), time.monotonic() - started)
            self.generation = report.generation
            return report
        if found != self.generation:
            if self.generation is not None:
                log.warning("the state generation changed to %s (rebuilt by another process)", found)
            self.generation = found
        return None

    async def start(self) -> None:
        """Watch the marker in the background until ``stop``."""
        self._watch = asyncio.create_task(self._watch_loop(), name="state-keeper")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def _watch_loop(self) -> None:
        while True:
            try:
                await self.ensure()
            except (RedisError, OSError, HandrailError) as exc:
                # Redis or Kafka is down, or a rebuild was cut short: the lock expires, someone tries again.
                STATE_REBUILDS.labels("failed").inc()
                log.warning("could not check or rebuild the state: %s", exc)
            except Exception:
                STATE_REBUILDS.labels("failed").inc()
                log.exception("rebuilding the state failed")
            await asyncio.sleep(self.poll_s)
