"""Topic names and their specs; ``ensure_topics`` creates what is missing.

Key = task id everywhere, so a task's messages stay ordered within a topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from handrail.bus.broker import make_admin
from handrail.bus.security import SaslCredentials
from handrail.errors import KafkaAdminError

#: A week: long enough to replay a task after a weekend incident.
_WEEK_MS = 7 * 24 * 3600 * 1000
_DAY_MS = 24 * 3600 * 1000
#: Partitions for the busy topics: the most consumers one group can use in parallel.
DEFAULT_PARTITIONS = 6


@dataclass(frozen=True)
class TopicSpec:
    """One topic as ``handrail topics ensure`` creates it."""

    name: str
    partitions: int = DEFAULT_PARTITIONS
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """Every topic name, under one prefix (default ``handrail.``)."""

    prefix: str = "handrail."

    @property
    def tasks(self) -> str:
        return f"{self.prefix}tasks"

    @property
    def steps(self) -> str:
        return f"{self.prefix}steps"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def control(self) -> str:
        return f"{self.prefix}control"

    @property
    def reviews_requested(self) -> str:
        return f"{self.prefix}reviews.requested"

    @property
    def reviews_decided(self) -> str:
        return f"{self.prefix}reviews.decided"

    @property
    def results(self) -> str:
        return f"{self.prefix}results"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"

    def agent(self, name: str) -> str:
        """The topic agent ``name`` consumes its handoffs from."""
        return f"{self.prefix}agent.{name}"

    def specs(self, agents: Iterable[str], *, steps_retention_days: float = 7) -> list[TopicSpec]:
        """All topics with partitions, retention and compaction.

        ``steps_retention_days``: how long step reports are kept, and with them the steps' recordings
        (``handrail replay``) and the checkpoints a task resumes or forks from.
        """
        week = {"retention.ms": str(_WEEK_MS)}
        specs = [
            TopicSpec(self.tasks, config=week),
            TopicSpec(self.steps, config={"retention.ms": str(int(steps_retention_days * _DAY_MS))}),
            TopicSpec(self.events, config=week),
            # Latest halt / breaker state per key is all that matters.
            TopicSpec(self.control, partitions=1, config={"cleanup.policy": "compact"}),
            TopicSpec(self.reviews_requested, config=week),
            TopicSpec(self.reviews_decided, config=week),
            TopicSpec(self.results, config=week),
            TopicSpec(self.dlq, config={"retention.ms": str(4 * _WEEK_MS)}),
            # The audit trail is the record: kept forever.
            TopicSpec(self.audit, config={"retention.ms": "-1"}),
        ]
        specs += [TopicSpec(self.agent(a), config=week) for a in sorted(agents)]
        return specs


async def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    replication_factor: int = 1,
    credentials: SaslCredentials | None = None,
) -> list[str]:
    """Create the topics in ``specs`` that do not exist yet (as ``credentials``); return the names created."""
    admin = make_admin(bootstrap, "handrail-topics", credentials)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        new = [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication_factor, topic_configs=s.config)
            for s in missing
        ]
        response = await admin.create_topics(new)
        created, failures = [], []
        for topic, code, *rest in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:  # another process created it meanwhile: fine
                failures.append(f"{topic}: {for_code(code).__name__} {rest[0] if rest and rest[0] else ''}".strip())
        if failures:
            raise KafkaAdminError(f"could not create topics: {'; '.join(failures)}")
        await _until_visible(admin, {s.name: s.partitions for s in missing})
        return created
    finally:
        await admin.close()


async def _until_visible(admin: AIOKafkaAdminClient, partitions: dict[str, int], timeout_s: float = 30.0) -> None:
    """Wait until the brokers' metadata shows every new topic with all its partitions: CreateTopics returns
    once the controller has them, and a reader asking a broker straight after could still be told the topic
    does not exist."""
    deadline = time.monotonic() + timeout_s
    while True:
        cluster = await admin._client.fetch_all_metadata()
        waiting = [t for t, n in partitions.items() if len(cluster.partitions_for_topic(t) or ()) < n]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise KafkaAdminError(f"topics created but not visible after {timeout_s:.0f} s: {', '.join(waiting)}")
        await asyncio.sleep(0.1)
