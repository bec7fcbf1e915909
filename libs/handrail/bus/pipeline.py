"""The consumer pipeline every service runs its handlers in.

For each message: decode into the handler's payload model; for handoffs,
verify the context hash and the parent hash, skip redeliveries and audit the
hop; run the handler, which decides what becomes of the task and returns it as
transitions (``handrail.lifecycle``); apply them (state, audit record, outputs);
record the message as done; only then may the offset be committed. Before the
transitions are applied, the pipeline checks that this process still owns the
message's partition (``handrail.state.fences``): a process that woke up after its
partitions moved drops what it was doing, publishing nothing. Many messages run
at once, each task's in order (``handrail.bus.consumer``). The outcome of every
error is decided here, once:

- ``RetryableError`` (Redis down, ...): tried again in place after a back-off, for
  as long as it takes; the task's later messages wait behind it. Nothing is lost.
- ``TaskHalted`` (a budget, deadline, loop or halt stopped the task before a call):
  the service's ``on_halted`` hook says what becomes of the task (ended ``halted``,
  parked for a person, reported); not a dead letter.
- ``Rejected``: dead-letter with the reason, then the service's ``on_rejected``
  hook (which ends the task with its one ``TaskResult``), then commit.
- anything else is a bug: dead-lettered as ``internal_error`` with the
  exception text, never dropped, never crashing the consumer.

If even the dead letter cannot be published, the message is tried again; one
that fails that way ``poison_after_attempts`` times in a row is dead-lettered as
``poison`` (its original bytes cut to ``MAX_ORIGINAL_BYTES`` if need be), so no
message can wedge its partition.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic_core
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from handrail.bus.consumer import ConcurrentConsumer
from handrail.bus.delivery import Delivery
from handrail.bus.identity import check_key, task_id_of
from handrail.bus.publisher import AUDIT_HEAD_HEADER, Publisher
from handrail.errors import (
    ContextHashMismatch,
    InternalError,
    MalformedMessage,
    ParentHashMismatch,
    PoisonMessage,
    Rejected,
    RetryableError,
    TaskHalted,
    UnknownTask,
)
from handrail.hashing import context_hash
from handrail.messages import DeadLetter, HandoffEnvelope, Payload, StepCompleted, derived_message_id, utcnow
from handrail.metrics import DEAD_LETTERS, FENCED, HANDLE_SECONDS, HANDOFFS, MESSAGES, POISON_MESSAGES, labels
from handrail.observability.tracing import consume_span
from handrail.state import Acceptance, TaskStore
from handrail.state.fences import Fences
from handrail.state.tasks import Via

if TYPE_CHECKING:
    from handrail.audit import AuditLog  # the audit log publishes through this package
    from handrail.audit.acceptance import HopAcceptance
    from handrail.lifecycle import Lifecycle, Plan
    from handrail.signing import HandoffVerifier

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Payload)
Handoff = HandoffEnvelope | StepCompleted


#: A handler (and a hook) returns what becomes of the task: ``handrail.lifecycle`` transitions, or None.
Handler = Callable[[P, Delivery], Awaitable["Plan"]]
OnRejected = Callable[[Rejected, Delivery, Any], Awaitable["Plan"]]
OnHalted = Callable[[TaskHalted, Delivery, Any], Awaitable["Plan"]]


#: A dead letter keeps at most this much of the original message, so that it always fits in a
#: Kafka record (1 MiB by default) once base64-encoded; its size and sha256 say what was cut.
MAX_ORIGINAL_BYTES = 512 * 1024
_NON_JSON_NUMBER = re.compile(rb"NaN|Infinity")
#: A reason is for a person to read: an exception that prints megabytes is cut here.
MAX_REASON_CHARS = 2000


async def _no_hook(error: Any, delivery: Delivery, payload: Any) -> Plan:
    return None


@dataclass(frozen=True)
class Subscription:
    """One topic a service consumes, and how its messages are handled."""

    topic: str
    group_id: str
    payload_type: type[Payload]
    handler: Handler[Any]
    on_rejected: OnRejected
    on_halted: OnHalted
    topic_kind: str

    @property
    def is_handoff(self) -> bool:
        return issubclass(self.payload_type, (HandoffEnvelope, StepCompleted))


#: Builds the group consumer of one subscription (``handrail.bus.broker.make_consumer`` with the credentials).
ConsumerFactory = Callable[[str], AIOKafkaConsumer]


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
        acceptance: HopAcceptance | None = None,
        lifecycle: Lifecycle | None = None,
        fences: Fences | None = None,
        handoffs: HandoffVerifier | None = None,
        retry_backoff_s: float = 1.0,
        traced: bool = True,
        max_in_flight: int = 256,
        shutdown_grace_s: float = 20.0,
        poison_after_attempts: int = 5,
    ) -> None:
        self.service = service
        self.publisher = publisher
        self.store = store
        self.dlq_topic = dlq_topic
        self.audit = audit
        #: Accepting a hop and appending its audit record in one round trip (when there is an audit trail).
        self.acceptance = acceptance if audit is not None and audit.enabled and lifecycle is not None else None
        self.lifecycle = lifecycle
        self.fences = fences
        self.handoffs = handoffs
        self.retry_backoff_s = retry_backoff_s
        self.traced = traced
        self.max_in_flight = max_in_flight
        self.shutdown_grace_s = shutdown_grace_s
        self.poison_after_attempts = poison_after_attempts
        self.subscriptions: list[Subscription] = []
        self.consumers: list[ConcurrentConsumer] = []

    def subscribe(
        self,
        topic: str,
        *,
        group_id: str,
        payload_type: type[P],
        handler: Handler[P],
        on_rejected: OnRejected = _no_hook,
        on_halted: OnHalted = _no_hook,
        topic_kind: str,
    ) -> None:
        """Consume ``topic`` in ``group_id`` (from ``start``), decoding into ``payload_type`` for ``handler``."""
        self.subscriptions.append(
            Subscription(topic, group_id, payload_type, handler, on_rejected, on_halted, topic_kind)
        )

    async def start(self, make_consumer: ConsumerFactory) -> None:
        """Start one concurrent group consumer per subscription."""
        for sub in self.subscriptions:

            async def process(delivery: Delivery, attempt: int, sub: Subscription = sub) -> None:
                await self.process(sub, delivery, attempt)

            async def claim(tp: TopicPartition, group: str = sub.group_id) -> str:
                assert self.fences is not None
                return await self.fences.claim(group, tp.topic, tp.partition)

            consumer = ConcurrentConsumer(
                functools.partial(make_consumer, sub.group_id),
                [sub.topic],
                process,
                name=f"{self.service}:{sub.topic_kind}",
                max_in_flight=self.max_in_flight,
                retry_backoff_s=self.retry_backoff_s,
                shutdown_grace_s=self.shutdown_grace_s,
                claim=claim if self.fences is not None else None,
            )
            await consumer.start()
            self.consumers.append(consumer)

    async def stop(self) -> None:
        """Drain every consumer: running messages finish (within the grace period), offsets are committed."""
        for consumer in self.consumers:
            await consumer.stop()
        self.consumers.clear()

    async def process(self, sub: Subscription, delivery: Delivery, attempt: int) -> None:
        """Process one delivery; raise to have it tried again (``attempt`` counts the tries)."""
        started = time.perf_counter()
        span = (
            consume_span(sub.topic, sub.group_id, delivery.key, delivery.headers)
            if self.traced
            else contextlib.nullcontext()
        )
        try:
            with span:
                outcome = await self._process(sub, delivery)
        except RetryableError:
            raise  # a dependency is down, not the message: tried again until it is back (fail closed)
        except Exception as exc:
            if attempt < self.poison_after_attempts:
                raise
            outcome = await self._poison(sub, delivery, attempt, exc)
        MESSAGES.labels(self.service, sub.topic_kind, outcome).inc()
        HANDLE_SECONDS.labels(self.service).observe(time.perf_counter() - started)

    async def _poison(self, sub: Subscription, delivery: Delivery, attempt: int, exc: Exception) -> str:
        """Park a message that failed ``attempt`` times in a row, and end its task if it can be identified."""
        task_id = task_id_of(None, delivery)
        error = PoisonMessage(
            f"{self.service} failed on this message {attempt} times in a row; last error: {type(exc).__name__}: {exc}",
            task_id=task_id,
        )
        # Its own id: an earlier attempt may have published a dead letter of this message already.
        try:
            await self.dead_letter(delivery, error.reason, error.error_type, task_id, role="dead-letter/poison")
        except RetryableError:
            raise
        except Exception:  # the audit append may be what keeps failing: the dead letter alone, then
            log.exception("%s: could not audit the poison message %s", self.service, delivery.ref)
            await self.dead_letter(
                delivery, error.reason, error.error_type, task_id, role="dead-letter/poison", audited=False
            )
        POISON_MESSAGES.labels(self.service).inc()
        try:
            await self._apply(sub, delivery, await sub.on_rejected(error, delivery, None))
        except RetryableError:
            raise
        except Exception:  # what failed may be this very hook: the dead letter is the record
            log.exception("%s: could not end the task of poison message %s", self.service, delivery.ref)
        return "poison"

    async def _process(self, sub: Subscription, delivery: Delivery) -> str:
        payload: Payload | None = None
        is_handoff, on_rejected = sub.is_handoff, sub.on_rejected
        try:
            payload = decode(sub.payload_type, delivery.value)
            task_id = getattr(payload, "task_id", None)
            if isinstance(task_id, str):
                check_key(task_id, delivery)
                if self.audit is not None:
                    self.audit.hint(task_id, delivery.header(AUDIT_HEAD_HEADER))
            if is_handoff:
                # The signature first: a forged hop must not move the task's hash chain.
                self._check_signature(payload, delivery)  # type: ignore[arg-type]
                if not await self._verify(payload):  # type: ignore[arg-type]
                    return "skipped"
            if not await self._apply(sub, delivery, await sub.handler(payload, delivery)):
                return "fenced"
            if is_handoff:
                await self.store.mark_done(payload.task_id, self.service, payload.message_id)  # type: ignore[attr-defined]
            return "ok"
        except RetryableError:
            raise
        except TaskHalted as exc:
            log.info("%s: task %s halted: %s", self.service, exc.task_id, exc.reason)
            if not await self._apply(sub, delivery, await sub.on_halted(exc, delivery, payload)):
                return "fenced"
            if is_handoff and payload is not None:
                await self.store.mark_done(payload.task_id, self.service, payload.message_id)  # type: ignore[attr-defined]
            return "halted"
        except Rejected as exc:
            if not await self._still_owner(sub, delivery):
                return "fenced"  # e.g. a model call that timed out while this process was frozen
            await self.dead_letter(delivery, exc.reason, exc.error_type, exc.task_id or task_id_of(payload, delivery))
            await self._apply(sub, delivery, await on_rejected(exc, delivery, payload), owner_checked=True)
            return exc.error_type
        except Exception as exc:  # a bug: park the message with what went wrong, keep consuming
            log.exception("%s: internal error on %s", self.service, delivery.ref)
            reason = f"internal error in {self.service}: {type(exc).__name__}: {exc}"
            await self.dead_letter(delivery, reason, "internal_error", task_id_of(payload, delivery))
            # The task cannot go on from a message its service could not handle: it ends, with the reason.
            internal = InternalError(reason, task_id=task_id_of(payload, delivery))
            await self._apply(sub, delivery, await on_rejected(internal, delivery, payload))
            return "internal_error"

    async def _apply(self, sub: Subscription, delivery: Delivery, plan: Plan, *, owner_checked: bool = False) -> bool:
        """Apply what a handler decided, unless this process no longer owns the partition: then False."""
        if plan is None or plan == []:
            return True
        if self.lifecycle is None:
            raise RuntimeError(f"{self.service}: a handler returned transitions, but the pipeline has no lifecycle")
        if not owner_checked and not await self._still_owner(sub, delivery):
            return False
        await self.lifecycle.apply(plan)
        return True

    async def _still_owner(self, sub: Subscription, delivery: Delivery) -> bool:
        if self.fences is None or delivery.fence is None:
            return True
        if await self.fences.holds(sub.group_id, delivery.topic, delivery.partition, delivery.fence):
            return True
        FENCED.labels(self.service).inc()
        log.warning(
            "%s: %s moved to another consumer while this one was away; dropping what it did (the new owner redoes it)",
            self.service,
            delivery.ref,
        )
        return False

    def _check_signature(self, payload: HandoffEnvelope | StepCompleted, delivery: Delivery) -> None:
        if self.handoffs is None:
            return
        try:
            if isinstance(payload, HandoffEnvelope):
                self.handoffs.check_handoff(payload, delivery.value)
            else:
                self.handoffs.check_step(payload, delivery.value)
        except Rejected as exc:
            HANDOFFS.labels(self.service, labels.error_type(exc.error_type)).inc()
            raise

    async def _verify(self, payload: HandoffEnvelope | StepCompleted) -> bool:
        """Verify a handoff and, when it is taken on, audit it; return False when it must be skipped (a
        finished redelivery, an ended task)."""
        actual = context_hash(payload.context)
        if actual != payload.context_hash:
            HANDOFFS.labels(self.service, "context_hash_mismatch").inc()
            raise ContextHashMismatch(
                f"context of task {payload.task_id} step {payload.step!r} hashes to {actual}, "
                f"but the envelope says {payload.context_hash}: the context was truncated or altered",
                task_id=payload.task_id,
            )
        hop = (
            payload.task_id,
            payload.message_id,
            payload.parent_hash,
            payload.context_hash,
            self.service,
            payload.step,
        )
        taken = payload.handoff if isinstance(payload, StepCompleted) else None
        via = Via(taken.message_id, taken.parent_hash) if taken is not None and taken.parent_hash else None
        if self.acceptance is not None and isinstance(payload, StepCompleted):
            assert self.lifecycle is not None
            record = self.lifecycle.accepted_record(payload, by=self.service)
            result = (await self.acceptance.accept(*hop, record, via)).result
        else:
            result = await self.store.accept(*hop, via)
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

    async def dead_letter(
        self,
        delivery: Delivery,
        reason: str,
        error_type: str,
        task_id: str | None,
        role: str = "dead-letter",
        audited: bool = True,
    ) -> None:
        """Publish ``delivery`` to the DLQ with its reason; the id is stable across redeliveries."""
        original = delivery.value[:MAX_ORIGINAL_BYTES]
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + " [...]"
        letter = DeadLetter(
            message_id=derived_message_id(delivery.ref, role),
            reason=reason,
            error_type=error_type,
            source_topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
            original=base64.b64encode(original).decode(),
            original_size=len(delivery.value),
            original_sha256=hashlib.sha256(delivery.value).hexdigest(),
            original_truncated=len(original) < len(delivery.value) or None,
            task_id=task_id,
            service=self.service,
            dead_lettered_at=utcnow(),
        )
        # The audit record first (it is idempotent): a retry caused by the state is then not a second letter.
        if audited and self.audit is not None and task_id is not None:
            await self.audit.record(
                task_id,
                dedupe_key=letter.message_id,
                actor=f"service:{self.service}",
                action="message.dead_lettered",
                reason=reason,
                details={"error_type": error_type, "source": delivery.ref, "dead_letter_id": letter.message_id},
            )
        await self.publisher.publish(self.dlq_topic, letter, key=task_id)
        DEAD_LETTERS.labels(self.service, labels.error_type(error_type)).inc()
        log.warning("%s: dead-lettered %s (%s): %s", self.service, delivery.ref, error_type, reason)


def decode(payload_type: type[P], value: bytes) -> P:
    """Parse ``value`` as ``payload_type``, or raise ``MalformedMessage`` saying what is wrong."""
    name = payload_type.__name__
    try:
        payload = payload_type.model_validate_json(value)
    except ValidationError as exc:
        invalid = [e for e in exc.errors() if e["type"] == "json_invalid"]
        if invalid:
            why = invalid[0]["msg"].removeprefix("Invalid JSON: ")
            raise MalformedMessage(f"not a {name}: the bytes are not valid JSON ({why})") from None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise MalformedMessage(f"not a valid {name}: {problems}") from None
    # The parser takes NaN and Infinity, which JSON (RFC 8259) has not: a cheap look first, then a strict parse.
    if _NON_JSON_NUMBER.search(value):
        try:
            pydantic_core.from_json(value, allow_inf_nan=False)
        except ValueError as exc:
            raise MalformedMessage(
                f"not a {name}: the bytes are not valid JSON (NaN and Infinity are not JSON numbers: {exc})"
            ) from None
    return payload
