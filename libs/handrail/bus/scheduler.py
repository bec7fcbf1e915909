"""Running many messages at once while keeping each task's messages in order.

Messages are grouped by key (the task id): one chain per key, run one message after
the other, and as many chains at once as there are keys. A message with a lane header
(``LANE_HEADER``: the branches of a parallel step, each its own lane) runs in the chain
of its key and lane, beside the task's other lanes. A message that fails is
tried again in place, after a back-off, so the messages behind it on its key wait
and nothing overtakes it; other keys go on. Whether a failure is worth another try
is the processor's decision: it is told which attempt this is.

A message whose partition was revoked, or that is still queued when the service
stops, is abandoned unfinished: its offset is not committed, and the partition's
next owner gets it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

from handrail.bus.delivery import Delivery
from handrail.bus.offsets import PartitionOffsets
from handrail.bus.publisher import LANE_HEADER

log = logging.getLogger(__name__)

#: Processes one delivery; the int is the attempt (1 the first time). Raising means "try again".
Process = Callable[[Delivery, int], Awaitable[None]]

#: Back-off between attempts doubles from the first to this cap: a Redis that is down for
#: minutes is probed every few seconds, not hammered.
MAX_BACKOFF_S = 5.0


class KeyedScheduler:
    """Runs deliveries concurrently, one at a time per key, and says which offsets are finished."""

    def __init__(self, process: Process, *, name: str, retry_backoff_s: float) -> None:
        self._process = process
        self._name = name
        self._retry_backoff_s = retry_backoff_s
        self._chains: dict[Hashable, deque[tuple[Delivery, PartitionOffsets]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[int, int] = {}  # id(PartitionOffsets) -> messages of it being processed now
        self._stopping = False
        self._changed = asyncio.Event()
        self.in_flight = 0

    def submit(self, delivery: Delivery, offsets: PartitionOffsets) -> None:
        """Queue ``delivery`` behind the earlier messages of its key, and start its chain if idle."""
        offsets.fetched(delivery.offset)
        self.in_flight += 1
        lane = delivery.header(LANE_HEADER)
        key: Hashable = (delivery.topic, delivery.key, lane) if delivery.key is not None else delivery.ref
        chain = self._chains.get(key)
        if chain is not None:
            chain.append((delivery, offsets))
            return
        self._chains[key] = deque([(delivery, offsets)])
        task = asyncio.create_task(self._run_chain(key), name=f"{self._name}:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return when a message finished (or was abandoned), or after ``timeout_s``."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    async def release(self, offsets: list[PartitionOffsets], timeout_s: float) -> None:
        """Stop starting messages of these partitions and wait (bounded) for the running ones."""
        for partition in offsets:
            partition.revoked = True
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(self._running.get(id(p)) for p in offsets):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("%s: revoked partitions still run messages; their next owner redoes them", self._name)
                return
            await self.wait_for_change(0.05)

    async def drain(self, timeout_s: float) -> None:
        """Finish the messages being processed (bounded), start no new ones, cancel what is left."""
        self._stopping = True
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "%s: %d messages did not finish within %.0fs; they will be redelivered",
                    self._name,
                    len(pending),
                    timeout_s,
                )
                await asyncio.gather(*pending, return_exceptions=True)

    async def _run_chain(self, key: Hashable) -> None:
        chain = self._chains[key]
        try:
            while chain:
                delivery, offsets = chain[0]
                if not (offsets.revoked or self._stopping) and await self._run_one(delivery, offsets):
                    offsets.finished(delivery.offset)
                chain.popleft()
                self.in_flight -= 1
                self._changed.set()
        finally:
            self.in_flight -= len(chain)
            del self._chains[key]
            self._changed.set()

    async def _run_one(self, delivery: Delivery, offsets: PartitionOffsets) -> bool:
        """Process ``delivery`` until it succeeds; False when abandoned (revoked, stopping)."""
        self._running[id(offsets)] = self._running.get(id(offsets), 0) + 1
        try:
            attempt = 1
            while True:
                try:
                    await self._process(delivery, attempt)
                    return True
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    backoff_s = min(self._retry_backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
                    log.warning(
                        "%s: will retry %s in %.1fs (attempt %d failed): %s",
                        self._name,
                        delivery.ref,
                        backoff_s,
                        attempt,
                        exc,
                    )
                    await asyncio.sleep(backoff_s)
                    if offsets.revoked or self._stopping:
                        return False
                    attempt += 1
        finally:
            left = self._running[id(offsets)] - 1
            if left:
                self._running[id(offsets)] = left
            else:
                del self._running[id(offsets)]
