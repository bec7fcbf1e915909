"""One session with one MCP server per process: opened on first use, opened again after it drops.

The SDK's client runs its transport in an anyio task group: a transport that fails (the server
went away) cancels the task that entered it. So the session lives in a task of its own, which
holds it open until ``close``; calls come from the steps' tasks and only wait on their replies.
A call that cannot be made or answered in ``timeout_s`` raises an ``McpUnavailable``: the
guard counts it as the tool's error, and the tool's breaker learns of it. Which one says what
the server may have done (``handrail.tools.kinds``):

- ``McpUnreachable`` (a ``ToolFailure``, transient): the request never left, so nothing happened;
  a side effect may be tried again under the same idempotency key;
- ``McpNoAnswer`` (a ``ToolOutcomeUnknown``): the request went out and no usable answer came back
  (a timeout, a dropped session, a reply that breaks the tool's schema), so the server may have
  acted: a side effect is never repeated, its claim stays in doubt.

A session whose server went away is noticed by the call that finds it closed (that call fails,
it may have reached the server); the next call opens a new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import httpx2
import mcp.types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import Transport
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CONNECTION_CLOSED, INVALID_PARAMS, REQUEST_TIMEOUT, RequestParamsMeta

from handrail.contracts.mcp import McpServerSpec
from handrail.tools.kinds import ToolErrorKind, ToolOutcomeUnknown
from handrail.tools.registry import ToolFailure

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A page cap for tools/list: a server whose cursor never ends cannot hang the start.
_MAX_PAGES = 100
#: ``${NAME}`` in a header or env value: taken from the worker's environment, so secrets stay out of git.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class McpUnavailable(Exception):
    """The server could not be reached, dropped the connection, or did not answer within its timeout."""


class McpUnreachable(McpUnavailable, ToolFailure):
    """The request never reached the server: nothing happened (a transient failure)."""

    def __init__(self, message: str) -> None:
        ToolFailure.__init__(self, message, kind=ToolErrorKind.TRANSIENT)


class McpNoAnswer(McpUnavailable, ToolOutcomeUnknown):
    """The request went out but no usable answer came back: what the server did is unknown."""

    def __init__(self, message: str, *, kind: ToolErrorKind = ToolErrorKind.TRANSIENT, timed_out: bool = False) -> None:
        ToolOutcomeUnknown.__init__(self, message, kind=kind, timed_out=timed_out)


class McpConnection:
    """The process's session with one server (``spec``); safe to use from many tasks at once."""

    def __init__(self, spec: McpServerSpec) -> None:
        self.spec = spec
        self._lock = asyncio.Lock()
        self._client: Client | None = None
        self._dropped = asyncio.Event()
        self._stop = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None

    async def list_tools(self) -> list[mcp.types.Tool]:
        """Every tool the server offers, all pages."""
        tools: list[mcp.types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):

            async def page_at(client: Client, at: str | None = cursor) -> mcp.types.ListToolsResult:
                return await client.list_tools(cursor=at, cache_mode="refresh")

            page = await self._request("listing its tools", page_at)
            tools += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def call_tool(
        self, name: str, arguments: dict[str, Any], meta: Mapping[str, Any]
    ) -> mcp.types.CallToolResult:
        """tools/call ``name`` with ``meta`` as the request's ``_meta``."""
        timeout_s = self.spec.timeout_s
        request_meta = cast(RequestParamsMeta, dict(meta))
        return await self._request(
            f"calling {name}",
            lambda c: c.call_tool(name, arguments, read_timeout_seconds=timeout_s, meta=request_meta),
        )

    async def close(self) -> None:
        """End the session (and a stdio server's process)."""
        async with self._lock:
            await self._end()

    async def _request(self, doing: str, send: Callable[[Client], Awaitable[T]]) -> T:
        server = self.spec.name
        try:
            async with asyncio.timeout(self.spec.connect_timeout_s):
                client = await self._connected()
        except TimeoutError:
            raise McpUnreachable(
                f"MCP server {server!r} could not be reached within {self.spec.connect_timeout_s:g}s"
            ) from None
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                request = asyncio.ensure_future(send(client))
                dropped = asyncio.ensure_future(self._dropped.wait())
                try:
                    await asyncio.wait({request, dropped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    dropped.cancel()
                    if not request.done():
                        request.cancel()
                if not request.done() or request.cancelled():
                    raise McpNoAnswer(f"MCP server {server!r} dropped the connection while {doing}")
                return request.result()
        except TimeoutError:
            raise McpNoAnswer(
                f"MCP server {server!r} did not answer within {self.spec.timeout_s:g}s while {doing}", timed_out=True
            ) from None
        except McpUnavailable:
            raise
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._dropped.set()  # the next call opens a new session
                raise McpNoAnswer(f"MCP server {server!r} closed the connection while {doing}") from None
            if exc.code == REQUEST_TIMEOUT:
                raise McpNoAnswer(
                    f"MCP server {server!r} did not answer within {self.spec.timeout_s:g}s while {doing}",
                    timed_out=True,
                ) from None
            # A JSON-RPC error: the server refused the request, the tool did not run.
            kind = ToolErrorKind.INVALID_INPUT if exc.code == INVALID_PARAMS else ToolErrorKind.PERMANENT
            raise ToolFailure(f"MCP server {server!r} refused {doing}: {exc.message}", kind=kind) from None
        except RuntimeError as exc:  # the SDK's checks of what came back: a result that breaks its outputSchema
            raise McpNoAnswer(
                f"MCP server {server!r} answered {doing} with something unusable: {exc}", kind=ToolErrorKind.PERMANENT
            ) from None
        except Exception as exc:
            raise McpNoAnswer(f"MCP server {server!r} failed while {doing}: {_describe(exc)}") from None

    async def _connected(self) -> Client:
        async with self._lock:
            if self._client is not None and not self._dropped.is_set():
                return self._client
            await self._end()  # a session that dropped: its task is over or ending
            self._dropped, self._stop = asyncio.Event(), asyncio.Event()
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            self._owner = asyncio.create_task(self._own(ready, self._dropped, self._stop), name=f"mcp-{self.spec.name}")
            try:
                self._client = await asyncio.shield(ready)
            except BaseException:
                await self._end()
                raise
            return self._client

    async def _own(self, ready: asyncio.Future[Client], dropped: asyncio.Event, stop: asyncio.Event) -> None:
        """Hold one session open until ``stop``; whatever ends it sets ``dropped``."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(Client(await self._transport(stack), cache=None))
                ready.set_result(client)
                log.info("MCP server %r: connected (%s)", self.spec.name, self.spec.transport)
                await stop.wait()
        except BaseException as exc:  # the transport fails with groups and cancellations
            if not ready.done():
                ready.set_exception(
                    McpUnreachable(f"MCP server {self.spec.name!r} cannot be reached: {_describe(exc)}")
                )
            elif not stop.is_set():
                log.warning(
                    "MCP server %r: connection lost (%s); the next call reconnects", self.spec.name, _describe(exc)
                )
            if isinstance(exc, asyncio.CancelledError) and stop.is_set():
                return
        finally:
            dropped.set()

    async def _end(self) -> None:
        owner, self._owner, self._client = self._owner, None, None
        if owner is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(owner), self.spec.timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            owner.cancel()
            with contextlib.suppress(BaseException):
                await owner

    async def _transport(self, stack: contextlib.AsyncExitStack) -> StdioServerParameters | Transport:
        spec = self.spec
        if spec.transport == "stdio":
            assert spec.command is not None  # the contract requires it
            env = {k: _expand(v) for k, v in spec.env.items()}
            return StdioServerParameters(command=spec.command, args=list(spec.args), env=env or None)
        assert spec.url is not None
        headers = {k: _expand(v) for k, v in spec.headers.items()}
        # No read timeout: the server may hold its event stream open; every request is bounded by timeout_s.
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(spec.timeout_s, read=None))
        )
        return streamable_http_client(spec.url, http_client=http)


def _expand(value: str) -> str:
    return _VARIABLE.sub(lambda m: os.environ.get(m.group(1), ""), value)


def _describe(exc: BaseException) -> str:
    """The innermost cause of a transport failure, in one line (anyio reports them as groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
