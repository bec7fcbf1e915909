"""Which offset of a partition may be committed while its messages finish out of order.

Messages of one partition run concurrently (one key at a time, many keys at once), so
they finish in any order. Kafka keeps one committed offset per partition: everything
below it counts as done. The only safe offset is therefore the lowest unfinished one —
a crash then redelivers every message that had not finished, and nothing is lost.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """The offsets of one assigned partition that were fetched and not yet finished.

    One object per assignment: when the partition is revoked it is marked so, and
    messages still queued under it are abandoned (its next owner redelivers them).
    """

    __slots__ = ("_committed", "_done", "_next", "_pending", "revoked")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # fetched offsets, ascending
        self._done: set[int] = set()  # finished offsets still behind an unfinished one
        self._next: int | None = None  # one past the highest fetched offset
        self._committed: int | None = None
        self.revoked = False

    def fetched(self, offset: int) -> None:
        """A message at ``offset`` was handed to the scheduler (offsets arrive in ascending order)."""
        self._pending.append(offset)
        self._next = offset + 1

    def finished(self, offset: int) -> None:
        """The message at ``offset`` is done: its outputs are acknowledged, or it was dead-lettered."""
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            self._done.discard(self._pending.popleft())

    @property
    def unfinished(self) -> int:
        """How many fetched messages have not finished."""
        return len(self._pending) - len(self._done)

    @property
    def first_unfinished(self) -> int | None:
        """The lowest offset not finished yet (one past the last fetched when all are), or None before any fetch."""
        if self._next is None:
            return None
        return self._pending[0] if self._pending else self._next

    def committable(self) -> int | None:
        """The offset to commit now (the lowest unfinished one), or None when nothing new is done."""
        offset = self.first_unfinished
        return None if offset is None or offset == self._committed else offset

    def committed(self, offset: int) -> None:
        """Kafka acknowledged the commit of ``offset``."""
        self._committed = offset
