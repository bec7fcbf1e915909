"""Publishing typed payloads, keyed by task id, with Handrail's headers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, RequestTimedOutError
from faststream.kafka import KafkaBroker
from opentelemetry import propagate

from handrail.errors import BusUnavailable
from handrail.messages import Payload
from handrail.signing import SIGNATURE_FIELD, Signer

#: Errors that mean "the broker is not there right now", whatever aiokafka's ``retriable`` says.
_UNAVAILABLE = (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError)
#: Header naming the payload model, so a consumer of a mixed topic can tell them apart.
TYPE_HEADER = "handrail-type"
#: Header with the task's audit chain head as the message's writer left it, ``<record hash>:<seq>``: the
#: next writer's guess (``handrail.audit.log``), never trusted (the append's compare-and-set checks it).
AUDIT_HEAD_HEADER = "handrail-audit-head"
#: Header naming the lane of a task a message runs in: messages of one key and one lane run in order, and
#: lanes of one key side by side (the branches of a parallel step, ``handrail.bus.scheduler``).
LANE_HEADER = "handrail-lane"


class Publisher:
    """Publishes payloads and waits for the broker's acknowledgement; signs what carries a signature."""

    def __init__(self, broker: KafkaBroker, signer: Signer | None = None) -> None:
        self._broker = broker
        self._signer = signer

    async def publish(
        self, topic: str, payload: Payload, *, key: str | None, headers: dict[str, str] | None = None
    ) -> None:
        """Publish ``payload`` on ``topic`` keyed by ``key`` (the task id); returns once acknowledged.

        A broker that cannot be reached or does not acknowledge in time is ``BusUnavailable``: the
        message is tried again once it is back, and that never counts towards ``poison``.
        """
        try:
            acknowledged = await self.send(topic, payload, key=key, headers=headers)
            if acknowledged is not None:
                await acknowledged
        except KafkaError as exc:
            if not exc.retriable and not isinstance(exc, _UNAVAILABLE):
                raise
            raise BusUnavailable(f"Kafka did not take a message for {topic}: {type(exc).__name__}: {exc}") from exc

    async def send(
        self, topic: str, payload: Payload, *, key: str | None, headers: dict[str, str] | None = None
    ) -> asyncio.Future[Any] | None:
        """Hand ``payload`` to the producer and return the future of its acknowledgement.

        For many small messages (decision events): send them all, then await the
        futures together before the offset commit - one wait instead of one each.
        (FastStream's in-memory test broker delivers at once and returns no future.)
        """
        if self._signer is not None and SIGNATURE_FIELD in type(payload).model_fields:
            value = self._signer.signed_bytes(payload)  # last: nothing may change the payload after it is signed
        else:
            value = payload.to_bytes()
        carrier = {**(headers or {}), TYPE_HEADER: type(payload).__name__}
        # W3C trace context of the span this runs in (none when tracing is off): one task, one trace.
        propagate.inject(carrier)
        future: asyncio.Future[Any] | None = await self._broker.publish(
            value,
            topic,
            key=key.encode() if key is not None else None,
            headers=carrier,
            no_confirm=True,
        )
        return future
