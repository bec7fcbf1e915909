"""The FastStream Kafka broker every service uses."""

from __future__ import annotations

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
