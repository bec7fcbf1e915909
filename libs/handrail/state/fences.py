"""Fencing: a consumer that lost its partitions while it slept publishes nothing of what it was doing.

A process frozen past its Kafka session timeout (a GC pause, a stopped container, a
host swap storm) wakes up still running the messages it had; meanwhile the group
gave their partitions to another member, which runs them again. Each time a member
is assigned a partition it writes a fresh token under the partition's key:

- ``<p>fence:{group}:{topic}:{partition}``  the token of the partition's newest owner

Every delivery carries the token its partition had when it was fetched; before a
hop's outputs are applied, the pipeline checks the token is still the partition's
(``Fences.holds``). A woken zombie finds a newer token and drops the message without
publishing or committing anything: its outputs are the new owner's to make.

What this cannot close (no broker transactions; ``docs/design.md`` says why): a
freeze between the check and the publish. What then goes out late carries the same
derived message ids as the new owner's, and the next hop skips it as a duplicate.
A Redis that lost its state has lost the tokens too: until the next rebalance the
partitions are unfenced (``holds`` answers True), and the other guarantees - ids
derived from the input, the task record's compare-and-set - still hold.
"""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from handrail.state.client import command, unavailable_as_retryable


class Fences:
    """The ownership tokens of a service's partitions."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self._redis = redis
        self._prefix = prefix

    def key(self, group: str, topic: str, partition: int) -> str:
        return f"{self._prefix}fence:{{{group}:{topic}:{partition}}}"

    async def claim(self, group: str, topic: str, partition: int) -> str:
        """Take the partition over: a fresh token, so that every earlier owner's is stale."""
        token = uuid.uuid4().hex
        async with unavailable_as_retryable(f"fence {topic}:{partition} for {group}"):
            await command(self._redis, "SET", self.key(group, topic, partition), token)
        return token

    async def holds(self, group: str, topic: str, partition: int, token: str) -> bool:
        """Whether ``token`` is still the partition's (or nobody's is known: Redis lost them)."""
        async with unavailable_as_retryable(f"check the fence of {topic}:{partition}"):
            current = await command(self._redis, "GET", self.key(group, topic, partition))
        return current is None or current == token
