"""Connecting to Redis, and turning its transport errors into ``StateUnavailable``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from handrail.errors import StateUnavailable
from handrail.state.wire import Address, Wire

#: Short timeouts: a stalled Redis must turn into a retry, not a hung consumer.
_SOCKET_TIMEOUT_S = 2.0


#: Connections per process: a consumer runs hundreds of messages at once (HANDRAIL_MAX_IN_FLIGHT),
#: each with a Redis call in flight at times; a burst beyond it waits for a free one.
_MAX_CONNECTIONS = 512
#: How long a call may wait for a free pooled connection. Waiting is not Redis failing: a process
#: busy with a burst must queue, not turn every queued call into a retry.
_POOL_WAIT_S = 30.0


def connect_redis(url: str, *, username: str | None = None, password: str | None = None) -> aioredis.Redis:
    """A client for ``url`` (as ``username``, when given); connections are opened lazily and pooled, and
    the guarded scripts run on one multiplexed connection (``handrail.state.wire``)."""
    login = {"username": username, "password": password} if username is not None else {}
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        **login,
        max_connections=_MAX_CONNECTIONS,
        timeout=_POOL_WAIT_S,
        socket_timeout=_SOCKET_TIMEOUT_S,
        socket_connect_timeout=_SOCKET_TIMEOUT_S,
        decode_responses=True,
    )
    client = cast(HandrailRedis, HandrailRedis.from_pool(pool))  # the client owns the pool: aclose() closes it
    address = Address.of(client)
    client.wire = Wire(address) if address is not None else None
    return client


class HandrailRedis(aioredis.Redis):
    """A redis-py client that also holds the process's ``Wire`` for the guarded scripts."""

    wire: Wire | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.wire is not None:
            self.wire.close()
        await super().aclose(close_connection_pool)


async def command(client: aioredis.Redis, *args: Any) -> Any:
    """One plain command of the hot path (``GET``, ``SET``, ``SADD``, ``HSET``), on the client's wire when it
    has one, else through redis-py; the reply as Redis gives it (``SET`` answers ``OK``, not ``True``)."""
    wire = wire_of(client)
    if wire is not None:
        return await wire.call(*args)
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped


def wire_of(client: aioredis.Redis) -> Wire | None:
    """The ``Wire`` of a client made by ``connect_redis`` (None for another client: it keeps redis-py's path)."""
    return client.wire if isinstance(client, HandrailRedis) else None


@asynccontextmanager
async def unavailable_as_retryable(what: str) -> AsyncIterator[None]:
    """Re-raise Redis transport errors as ``StateUnavailable`` naming ``what`` was attempted."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StateUnavailable(f"Redis unavailable while trying to {what}: {exc}") from exc
