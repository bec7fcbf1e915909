"""The consumer pipeline every service runs its handlers in.

For each message: decode into the handler's payload model; for handoffs,
verify the context hash and the parent hash and skip redeliveries; run the
handler (which publishes its outputs); record the message as done; only then
is the offset committed. The outcome of every error is decided here, once:

- ``RetryableError`` (Redis down, ...): back off, seek back, redeliver. Nothing is lost.
- ``TaskHalted`` (a budget, deadline, loop or halt stopped the task before a call):
  the service's ``on_halted`` hook ends the task ``halted``; not a dead letter.
- ``Rejected``: dead-letter with the reason, then the service's ``on_rejected``
  hook (which ends the task with its one ``TaskResult``), then commit.
- anything else is a bug: dead-lettered as ``internal_error`` with the
  exception text, never dropped, never crashing the consumer.

If even the dead letter cannot be published, the message is redelivered.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from faststream import AckPolicy
from faststream.exceptions import NackMessage
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from handrail.bus.publisher import Publisher
from handrail.errors import (
    ContextHashMismatch,
    InternalError,
    MalformedMessage,
    ParentHashMismatch,
    Rejected,
    RetryableError,
    TaskHalted,
    UnknownTask,
)
from handrail.hashing import context_hash
from handrail.messages import DeadLetter, HandoffEnvelope, Payload, StepCompleted, derived_message_id, utcnow
from handrail.metrics import DEAD_LETTERS, HANDLE_SECONDS, HANDOFFS, MESSAGES
from handrail.state import Acceptance, TaskStore

if TYPE_CHECKING:
    from handrail.audit import AuditLog  # the audit log publishes through this package
    from handrail.signing import HandoffVerifier

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Payload)
Handoff = HandoffEnvelope | StepCompleted


@dataclass(frozen=True)
class Delivery:
    """Where a consumed message came from, and its bytes."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes

    @property
    def ref(self) -> str:
        """``topic:partition:offset``: this delivery's identity in the log."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def from_message(cls, msg: Any) -> Delivery:
        record = msg.raw_message
        key = record.key.decode(errors="replace") if isinstance(record.key, bytes) else record.key
        return cls(record.topic, record.partition, record.offset, key, record.value or b"")


Handler = Callable[[P, Delivery], Awaitable[None]]
OnRejected = Callable[[Rejected, Delivery, Any], Awaitable[None]]
OnHalted = Callable[[TaskHalted, Delivery, Any], Awaitable[None]]


async def _no_hook(error: Any, delivery: Delivery, payload: Any) -> None:
    return None


class Pipeline:
    """Runs one service's handlers under Handrail's delivery guarantees."""

    def __init__(
        self,
        *,
        service: str,
        publisher: Publisher,
        store: TaskStore,
        dlq_topic: str,
        audit: AuditLog | None = None,
        handoffs: HandoffVerifier | None = None,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self.service = service
        self.publisher = publisher
        self.store = store
        self.dlq_topic = dlq_topic
        self.audit = audit
        self.handoffs = handoffs
        self.retry_backoff_s = retry_backoff_s

    def subscribe(
        self,
        broker: KafkaBroker,
        topic: str,
        *,
        group_id: str,
        payload_type: type[P],
        handler: Handler[P],
        on_rejected: OnRejected = _no_hook,
        on_halted: OnHalted = _no_hook,
        topic_kind: str,
    ) -> None:
        """Consume ``topic`` in ``group_id``, decoding into ``payload_type`` and calling ``handler``."""
        is_handoff = issubclass(payload_type, (HandoffEnvelope, StepCompleted))

        @broker.subscriber(
            topic,
            group_id=group_id,
            auto_offset_reset="earliest",
            # Offsets are committed by the ack, after the handler published its outputs.
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )
        async def consume(msg: KafkaMessage) -> None:
            delivery = Delivery.from_message(msg)
            started = time.perf_counter()
            outcome = await self._process(delivery, payload_type, handler, on_rejected, on_halted, is_handoff)
            MESSAGES.labels(self.service, topic_kind, outcome).inc()
            HANDLE_SECONDS.labels(self.service).observe(time.perf_counter() - started)

    async def _process(
        self,
        delivery: Delivery,
        payload_type: type[P],
        handler: Handler[P],
        on_rejected: OnRejected,
        on_halted: OnHalted,
        is_handoff: bool,
    ) -> str:
        payload: P | None = None
        try:
            payload = decode(payload_type, delivery.value)
            if is_handoff:
                # The signature first: a forged hop must not move the task's hash chain.
                self._check_signature(payload, delivery)  # type: ignore[arg-type]
                if not await self._verify(payload):  # type: ignore[arg-type]
                    return "skipped"
                await self._audit_hop(payload)  # type: ignore[arg-type]
            await handler(payload, delivery)
            if is_handoff:
                await self.store.mark_done(payload.task_id, self.service, payload.message_id)  # type: ignore[attr-defined]
            return "ok"
        except RetryableError as exc:
            log.warning("%s: will retry %s in %.1fs: %s", self.service, delivery.ref, self.retry_backoff_s, exc)
            await asyncio.sleep(self.retry_backoff_s)
            raise NackMessage() from exc
        except TaskHalted as exc:
            log.info("%s: task %s halted: %s", self.service, exc.task_id, exc.reason)
            await on_halted(exc, delivery, payload)
            if is_handoff and payload is not None:
                await self.store.mark_done(payload.task_id, self.service, payload.message_id)  # type: ignore[attr-defined]
            return "halted"
        except Rejected as exc:
            await self.dead_letter(delivery, exc.reason, exc.error_type, exc.task_id or _task_id_of(payload, delivery))
            await on_rejected(exc, delivery, payload)
            return exc.error_type
        except Exception as exc:  # a bug: park the message with what went wrong, keep consuming
            log.exception("%s: internal error on %s", self.service, delivery.ref)
            reason = f"internal error in {self.service}: {type(exc).__name__}: {exc}"
            await self.dead_letter(delivery, reason, "internal_error", _task_id_of(payload, delivery))
            # The task cannot go on from a message its service could not handle: it ends, with the reason.
            await on_rejected(InternalError(reason, task_id=_task_id_of(payload, delivery)), delivery, payload)
            return "internal_error"

    def _check_signature(self, payload: HandoffEnvelope | StepCompleted, delivery: Delivery) -> None:
        if self.handoffs is None:
            return
        try:
            if isinstance(payload, HandoffEnvelope):
                self.handoffs.check_handoff(payload, delivery.value)
            else:
                self.handoffs.check_step(payload, delivery.value)
        except Rejected as exc:
            HANDOFFS.labels(self.service, exc.error_type).inc()
            raise

    async def _verify(self, payload: HandoffEnvelope | StepCompleted) -> bool:
        """Verify a handoff; return False when it must be skipped (a finished redelivery, an ended task)."""
        actual = context_hash(payload.context)
        if actual != payload.context_hash:
            HANDOFFS.labels(self.service, "context_hash_mismatch").inc()
            raise ContextHashMismatch(
                f"context of task {payload.task_id} step {payload.step!r} hashes to {actual}, "
                f"but the envelope says {payload.context_hash}: the context was truncated or altered",
                task_id=payload.task_id,
            )
        result = await self.store.accept(
            payload.task_id, payload.message_id, payload.parent_hash, payload.context_hash, self.service, payload.step
        )
        outcome = result.outcome
        HANDOFFS.labels(self.service, outcome.value if outcome != Acceptance.ACCEPTED else "ok").inc()
        if outcome in (Acceptance.ACCEPTED, Acceptance.RESUMED):
            return True
        if outcome in (Acceptance.DUPLICATE, Acceptance.ENDED):
            log.info("%s: skipping %s of task %s (%s)", self.service, payload.message_id, payload.task_id, outcome)
            return False
        if outcome == Acceptance.UNKNOWN_TASK:
            raise UnknownTask(f"no open task {payload.task_id!r}: the router never opened it", task_id=payload.task_id)
        raise ParentHashMismatch(
            f"task {payload.task_id} step {payload.step!r}: parent_hash {payload.parent_hash} is not the last "
            f"committed hash {result.detail}: a hop was lost, replayed or forged",
            task_id=payload.task_id,
        )

    async def _audit_hop(self, payload: HandoffEnvelope | StepCompleted) -> None:
        """One audit record per verified hop: the handoff an agent took on, or the step it completed."""
        if self.audit is None:
            return
        if isinstance(payload, StepCompleted):
            await self.audit.record(
                payload.task_id,
                dedupe_key=payload.message_id,
                actor=f"agent:{payload.agent}",
                action=f"step.{payload.status}",
                reason=payload.reason,
                workflow=payload.workflow,
                step=payload.step,
                input_hash=payload.parent_hash,
                output_hash=payload.context_hash,
                details={
                    "patch": payload.patch,
                    "decisions": [d.model_dump(mode="json", exclude_none=True) for d in payload.decisions],
                    "tools_chosen": [d.name for d in payload.decisions if d.kind == "tool_call"],
                    "budget": payload.budget.model_dump(mode="json"),
                    "verified_by": self.service,
                },
                cost_usd=payload.usage.cost_usd,
                tokens=payload.usage.tokens,
            )
        else:
            await self.audit.record(
                payload.task_id,
                dedupe_key=payload.message_id,
                actor=f"agent:{payload.receiver}",
                action="handoff.accepted",
                reason=f"handed over by {payload.sender}",
                workflow=payload.workflow,
                step=payload.step,
                input_hash=payload.parent_hash,
                output_hash=payload.context_hash,
                details={"sender": payload.sender, "budget": payload.budget.model_dump(mode="json")},
            )

    async def dead_letter(self, delivery: Delivery, reason: str, error_type: str, task_id: str | None) -> None:
        """Publish ``delivery`` to the DLQ with its reason; the id is stable across redeliveries."""
        letter = DeadLetter(
            message_id=derived_message_id(delivery.ref, "dead-letter"),
            reason=reason,
            error_type=error_type,
            source_topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
            original=base64.b64encode(delivery.value).decode(),
            task_id=task_id,
            service=self.service,
            dead_lettered_at=utcnow(),
        )
        await self.publisher.publish(self.dlq_topic, letter, key=task_id)
        if self.audit is not None and task_id is not None:
            await self.audit.record(
                task_id,
                dedupe_key=letter.message_id,
                actor=f"service:{self.service}",
                action="message.dead_lettered",
                reason=reason,
                details={"error_type": error_type, "source": delivery.ref, "dead_letter_id": letter.message_id},
            )
        DEAD_LETTERS.labels(self.service, error_type).inc()
        log.warning("%s: dead-lettered %s (%s): %s", self.service, delivery.ref, error_type, reason)


def decode(payload_type: type[P], value: bytes) -> P:
    """Parse ``value`` as ``payload_type``, or raise ``MalformedMessage`` saying what is wrong."""
    name = payload_type.__name__
    try:
        return payload_type.model_validate_json(value)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise MalformedMessage(f"not a {name}: the bytes are not valid JSON") from None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise MalformedMessage(f"not a valid {name}: {problems}") from None


def _task_id_of(payload: Payload | None, delivery: Delivery) -> str | None:
    task_id = getattr(payload, "task_id", None)
    return task_id if isinstance(task_id, str) else delivery.key
