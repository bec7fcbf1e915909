"""Publishing typed payloads, keyed by task id, with Handrail's headers."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from handrail.messages import Payload

#: Header naming the payload model, so a consumer of a mixed topic can tell them apart.
TYPE_HEADER = "handrail-type"


class Publisher:
    """Publishes payloads and waits for the broker's acknowledgement."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(self, topic: str, payload: Payload, *, key: str | None) -> None:
        """Publish ``payload`` on ``topic`` keyed by ``key`` (the task id); returns once acknowledged."""
        await self._broker.publish(
            payload.to_bytes(),
            topic,
            key=key.encode() if key is not None else None,
            headers={TYPE_HEADER: type(payload).__name__},
        )
