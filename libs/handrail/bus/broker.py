"""The one place Kafka clients are opened: the FastStream broker (publishing) and the group
consumers every service runs, each with the process's credentials."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider

from handrail.deploy.kafka_security import SaslCredentials


def make_broker(
    bootstrap: str,
    client_id: str,
    tracer_provider: TracerProvider | None = None,
    credentials: SaslCredentials | None = None,
) -> KafkaBroker:
    """A broker whose producer cannot lose or duplicate a send.

    Idempotence and ``acks=all`` are set explicitly rather than trusted to
    defaults: a publish returns only when every in-sync replica has it.
    """
    return KafkaBroker(
        bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        # Topics are created by `handrail topics ensure`, never by a typo in a publish.
        allow_auto_create_topics=False,
        logger=None,
        # W3C trace context in Kafka headers: one task, one trace, across every service.
        middlewares=[KafkaTelemetryMiddleware(tracer_provider=tracer_provider)] if tracer_provider else [],
        # Each service and agent connects as its own principal, limited by its ACLs.
        security=credentials.faststream_security() if credentials else None,
    )


#: A consumer fetches at most this much per partition and request; a larger record still arrives
#: (alone), so this bounds memory per fetch, not the size of a message.
_MAX_PARTITION_FETCH_BYTES = 1024 * 1024


def make_consumer(
    bootstrap: str, group_id: str | None, client_id: str, credentials: SaslCredentials | None = None
) -> AIOKafkaConsumer:
    """A group consumer that commits only what the pipeline says is finished (no auto-commit).

    Without ``group_id``: a reader outside any group (assign, then seek), see ``make_reader``.
    """
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=_MAX_PARTITION_FETCH_BYTES,
        **(credentials.client_options() if credentials else {}),
    )


def make_reader(bootstrap: str, client_id: str, credentials: SaslCredentials | None = None) -> AIOKafkaConsumer:
    """A consumer outside any group, for reading topics back from the start (assign, then seek)."""
    return make_consumer(bootstrap, None, client_id, credentials)
