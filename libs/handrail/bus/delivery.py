"""One consumed Kafka record, as the pipeline sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """Where a consumed message came from, and its bytes."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    #: Kafka headers as sent (W3C trace context among them).
    headers: tuple[tuple[str, bytes], ...] = ()
    #: The ownership token of the partition when this was fetched (``handrail.state.fences``); None: unfenced.
    fence: str | None = None

    @property
    def ref(self) -> str:
        """``topic:partition:offset``: this delivery's identity in the log."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def from_record(cls, record: Any, fence: str | None = None) -> Delivery:
        """From an aiokafka ``ConsumerRecord`` (a key that is not UTF-8 is kept, with replacement characters)."""
        key = record.key.decode(errors="replace") if isinstance(record.key, bytes) else record.key
        return cls(
            record.topic, record.partition, record.offset, key, record.value or b"", tuple(record.headers or ()), fence
        )

    def header(self, name: str) -> bytes | None:
        """The value of the header ``name`` (the last one, if sent twice), or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found
