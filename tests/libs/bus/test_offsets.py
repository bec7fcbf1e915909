"""The committable offset of a partition whose messages finish out of order."""

from __future__ import annotations

from handrail.bus.offsets import PartitionOffsets


def test_nothing_fetched_commits_nothing() -> None:
    assert PartitionOffsets().committable() is None


def test_the_commit_stops_at_the_lowest_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12, 13):
        offsets.fetched(offset)
    assert offsets.committable() == 10
    offsets.finished(12)
    offsets.finished(11)
    assert offsets.committable() == 10 and offsets.unfinished == 2
    offsets.finished(10)
    assert offsets.committable() == 13 and offsets.unfinished == 1
    offsets.finished(13)
    assert offsets.committable() == 14 and offsets.unfinished == 0


def test_an_offset_already_committed_is_not_committed_again() -> None:
    offsets = PartitionOffsets()
    offsets.fetched(0)
    offsets.finished(0)
    offsets.committed(1)
    assert offsets.committable() is None
    offsets.fetched(1)
    assert offsets.committable() is None  # 1 is still unfinished: the committed offset stays
    offsets.finished(1)
    assert offsets.committable() == 2
