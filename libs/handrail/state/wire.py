"""One multiplexed Redis connection per process for the hot path: the guarded scripts.

redis-py takes a pooled connection for every command (a condition wait, a
health check, its event and metrics hooks, a Python encoder per argument):
about 190 µs of CPU per ``EVALSHA`` on a 2-core machine, several times what
the script itself costs Redis. Every hop runs a handful of scripts, so that was
a good part of each service's CPU.

A ``Wire`` is one connection that every coroutine of the process writes to:
RESP answers requests in the order they were sent, so the replies are matched
to a queue of futures, and calls made at the same time leave in the same TCP
writes (pipelining without anyone batching). hiredis packs the commands and
parses the replies: about 14 µs per call.

Failures look as they do on redis-py, so ``unavailable_as_retryable`` turns
them into retries: a lost connection fails every call in flight with
``ConnectionError`` and the next call reconnects; a reply that does not come
within the socket timeout is a ``TimeoutError`` and drops the connection
(what else is queued on it can no longer be trusted to match).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


@dataclass(frozen=True)
class Address:
    """Where and as whom a ``Wire`` connects (taken from a redis-py client's connection settings)."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    timeout_s: float = 2.0
    connect_timeout_s: float = 2.0

    @classmethod
    def of(cls, client: aioredis.Redis) -> Address | None:
        """The address of ``client``'s pool; None for what a ``Wire`` does not speak (TLS, a Unix socket)."""
        pool = client.connection_pool
        if pool.connection_class is not aioredis.Connection:
            return None
        kw = pool.connection_kwargs
        return cls(
            host=str(kw.get("host", "localhost")),
            port=int(kw.get("port", 6379)),
            db=int(kw.get("db", 0) or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            timeout_s=float(kw.get("socket_timeout") or 2.0),
            connect_timeout_s=float(kw.get("socket_connect_timeout") or 2.0),
        )


def _encoded(value: Any) -> bytes | str:
    """An argument as redis-py encodes it: text and bytes as they are, numbers by ``repr``, nothing else."""
    kind = type(value)
    if kind is str or kind is bytes:
        return value  # type: ignore[no-any-return]
    if kind is int or kind is float:
        return repr(value)
    if isinstance(value, bool) or not isinstance(value, str | bytes | int | float):
        raise DataError(f"invalid input of type {kind.__name__!r} for a Redis command")
    return value.encode() if isinstance(value, str) else repr(value)  # a subclass: a StrEnum's value


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        try:
            while (reply := self.reader.gets()) is not False:
                future = waiting.popleft()
                if future.done():  # its caller was cancelled or timed out
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail(RedisConnectionError(f"Redis sent what cannot be read: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError("Connection closed by server."))

    def fail(self, error: Exception) -> None:
        """Close the connection and fail every call still waiting on it."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class Wire:
    """One Redis connection shared by all of a process's coroutines, replies matched in order."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._protocol: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (a ``ResponseError`` reply is raised)."""
        protocol = self._protocol
        if protocol is None or protocol.closed or self._loop is not asyncio.get_running_loop():
            protocol = await self._connect()
        future = self._send(protocol, args)
        try:
            async with asyncio.timeout(self.address.timeout_s):
                return await future
        except TimeoutError:
            protocol.fail(RedisTimeoutError("Timeout reading from Redis"))
            raise RedisTimeoutError(f"no reply from Redis within {self.address.timeout_s}s") from None

    async def run_script(self, sha: str, source: str, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA``, loading the script first when this Redis does not have it (a restart, a new script)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.call("SCRIPT", "LOAD", source)
        return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    def close(self) -> None:
        """Close the connection; calls still in flight fail with ``ConnectionError``."""
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("the connection was closed"))
            self._protocol = None

    @staticmethod
    def _send(protocol: _Protocol, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        assert protocol.transport is not None
        protocol.waiting.append(future)
        packed: Any = tuple(_encoded(a) for a in args)  # the stub types a 1-tuple; any length is packed
        protocol.transport.write(hiredis.pack_command(packed))
        return future

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): the old connection belongs to the old one
            self._protocol, self._loop, self._connecting = None, loop, asyncio.Lock()
        assert self._connecting is not None
        async with self._connecting:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            address = self.address
            try:
                async with asyncio.timeout(address.connect_timeout_s):
                    _, protocol = await loop.create_connection(_Protocol, address.host, address.port)
                    # Sent before anything else, so they are answered first.
                    login = []
                    if address.password is not None:
                        credentials = (address.username or "default", address.password)
                        login.append(self._send(protocol, ("AUTH", *credentials)))
                    if address.db:
                        login.append(self._send(protocol, ("SELECT", address.db)))
                    for reply in login:
                        await reply
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(
                    f"Error connecting to {address.host}:{address.port}: {exc or 'timed out'}"
                ) from None
            except ResponseError:
                protocol.fail(RedisConnectionError("login refused"))
                raise
            self._protocol = protocol
            return protocol
