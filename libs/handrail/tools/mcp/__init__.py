"""Tools served by MCP servers (the official ``mcp`` SDK; stdio and streamable HTTP), as registry ``Tool``s.

An agent declares its servers under ``mcp_servers`` in ``agents.yaml`` (``handrail.contracts.mcp``);
its worker discovers them at start (``McpToolset``) and registers the allowed tools, so every call
goes through the step's guard like a built-in tool's: budget, loop window, breakers, idempotency
key (in the request's ``_meta``) and approvals.
"""

from handrail.tools.mcp.connection import McpConnection, McpNoAnswer, McpUnavailable, McpUnreachable
from handrail.tools.mcp.tools import META_IDEMPOTENCY_KEY, META_STEP, META_TASK_ID, Discovered
from handrail.tools.mcp.toolset import McpToolset, discover

__all__ = [
    "META_IDEMPOTENCY_KEY",
    "META_STEP",
    "META_TASK_ID",
    "Discovered",
    "McpConnection",
    "McpNoAnswer",
    "McpToolset",
    "McpUnavailable",
    "McpUnreachable",
    "discover",
]
