"""An agent's MCP servers in one worker process: discovered at start, their tools put in the registry.

At start every server is listed (``list_tools``) at once. An allowed tool a server does not offer
stops the worker with a message naming it; a tool whose schema is not JSON Schema is refused (not
registered, logged). A server that cannot be reached at start does not stop the worker: its tools
are not offered until it answers, the agent's other tools work meanwhile, and listing is retried
in the background with a doubling back-off (``RETRY_FIRST_S`` up to ``RETRY_MAX_S``). Found later,
a missing tool is logged as an error and the others are offered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from handrail.contracts import AgentSpec
from handrail.contracts.mcp import McpServerSpec
from handrail.tools.mcp.connection import McpConnection, McpUnavailable
from handrail.tools.mcp.tools import Discovered, discovered
from handrail.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

#: The first wait before listing a server that was down again; each failure doubles it.
RETRY_FIRST_S = 1.0
#: The longest wait between two listings of a server that stays down.
RETRY_MAX_S = 60.0


async def discover(server: McpServerSpec, connection: McpConnection) -> Discovered:
    """List ``server``'s tools over ``connection`` (``McpUnavailable`` when it does not answer)."""
    return discovered(server, await connection.list_tools(), connection)


class McpToolset:
    """The MCP servers of ``agent``: one connection each, their tools registered in ``registry``."""

    def __init__(
        self,
        agent: AgentSpec,
        registry: ToolRegistry,
        *,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.agent = agent
        self.registry = registry
        self.connections = {server.name: McpConnection(server) for server in agent.mcp_servers}
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        self._retries: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Discover every server; ``ContractError`` when one lacks an allowed tool."""
        servers = self.agent.mcp_servers
        found = await asyncio.gather(*(self._discover_once(s) for s in servers))
        for server, result in zip(servers, found, strict=True):
            if result is None:
                self._retries.append(asyncio.create_task(self._retry(server), name=f"mcp-discover-{server.name}"))
            elif result.missing:
                await self.close()
                raise result.missing_error()
            else:
                self._register(result)

    async def close(self) -> None:
        """Stop the retries and end every session."""
        for task in self._retries:
            task.cancel()
        for task in self._retries:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._retries.clear()
        await asyncio.gather(*(c.close() for c in self.connections.values()))

    async def _discover_once(self, server: McpServerSpec) -> Discovered | None:
        try:
            return await discover(server, self.connections[server.name])
        except McpUnavailable as exc:
            log.warning(
                "agent %r: %s; its tools %s are not offered until it answers (retrying)",
                self.agent.name,
                exc,
                server.qualified_names(),
            )
            return None

    async def _retry(self, server: McpServerSpec) -> None:
        wait_s = self.retry_first_s
        while True:
            await asyncio.sleep(wait_s)
            result = await self._discover_once(server)
            if result is not None:
                self._register(result)  # a missing tool is logged with the refused ones
                return
            wait_s = min(wait_s * 2, self.retry_max_s)

    def _register(self, found: Discovered) -> None:
        for name, why in found.refused.items():
            log.error("agent %r: MCP tool %r is not offered: %s", self.agent.name, name, why)
        for tool in found.tools:
            self.registry.register(tool)
        log.info(
            "agent %r: MCP server %r offers %s", self.agent.name, found.server.name, [t.spec.name for t in found.tools]
        )
