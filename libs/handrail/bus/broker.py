"""The one place Kafka clients are opened, each with the process's credentials: the FastStream
broker the services publish through, their group consumers, readers outside any group (the
review projector, the state rebuild, the CLI, the client), plain producers (the client, tools)
and admin clients (topics, ACLs)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaBroker

from handrail.bus.security import SaslCredentials
from handrail.errors import HandrailError


def make_broker(bootstrap: str, client_id: str, credentials: SaslCredentials | None = None) -> KafkaBroker:
    """A broker whose producer cannot lose or duplicate a send.

    Idempotence and ``acks=all`` are set explicitly rather than trusted to
    defaults: a publish returns only when every in-sync replica has it. The
    trace context goes into each message's headers where it is published
    (``handrail.bus.publisher``): no producer span per message.
    """
    return KafkaBroker(
        bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        # Topics are created by `handrail topics ensure`, never by a typo in a publish.
        allow_auto_create_topics=False,
        logger=None,
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


async def partitions_of(client: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partitions of ``topic``, asked of the cluster (a consumer's own metadata knows only what it
    subscribed to); raises if the topic does not exist."""
    cluster = await client._client.fetch_all_metadata()
    partitions = sorted(cluster.partitions_for_topic(topic) or ())
    if not partitions:
        raise HandrailError(f"topic {topic!r} does not exist: run `handrail topics ensure`")
    return partitions


def make_producer(
    bootstrap: str, client_id: str, credentials: SaslCredentials | None = None, **options: Any
) -> AIOKafkaProducer:
    """A producer outside FastStream (the client, tools) that, like the broker's, cannot lose or duplicate a send."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        **options,
        **(credentials.client_options() if credentials else {}),
    )


def make_admin(
    bootstrap: str, client_id: str, credentials: SaslCredentials | None = None, **options: Any
) -> AIOKafkaAdminClient:
    """An admin client: creating topics, applying ACLs, reading the cluster's metadata."""
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        **options,
        **(credentials.client_options() if credentials else {}),
    )
