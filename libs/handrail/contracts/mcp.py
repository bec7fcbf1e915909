"""An agent's MCP tool servers, as declared under ``mcp_servers`` in ``config/agents.yaml``.

Each server's allowed tools join the agent's tools as ``<server>__<tool>`` (``qualified``): the
server's name keeps two servers' tools and the built-in tools apart, and the name still fits the
``^[A-Za-z0-9_-]{1,64}$`` that model APIs require of a tool name.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: What a model API accepts as a tool name (OpenAI's and Anthropic's rule alike).
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Between a server's name and its tool's name; a server's name has no ``_``, so the split is unique.
SEPARATOR = "__"
#: How long a tools/call may take when the server's entry does not say: a slow server is a failing one.
DEFAULT_TIMEOUT_S = 30.0
#: How long opening a session may take: a stdio server is a process that has to start first.
DEFAULT_CONNECT_TIMEOUT_S = 30.0


def qualified(server: str, tool: str) -> str:
    """The name an agent, a model and the guard know the server's tool by."""
    return f"{server}{SEPARATOR}{tool}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class McpToolOptions(_Strict):
    """What the platform enforces for one of a server's tools, beyond what the server says of it."""

    #: Unset: the server's ``readOnlyHint`` decides; a tool that does not say it only reads is taken to
    #: change something (the MCP default), so it runs at most once per idempotency key.
    side_effect: bool | None = None
    requires_approval: bool = False
    on_reject: Literal["end", "refuse"] = "end"
    cost_usd: float = Field(default=0.0, ge=0, description="Reserved against the budget before each call.")


class McpServerSpec(_Strict):
    """One MCP server an agent takes tools from: how to reach it and which of its tools it may use."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=32)
    transport: Literal["stdio", "http"]
    command: str | None = Field(default=None, description="stdio: the program that serves MCP on its stdin/stdout.")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="stdio: set for the server, over a minimal base.")
    url: str | None = Field(default=None, pattern=r"^https?://", description="http: the streamable HTTP endpoint.")
    headers: dict[str, str] = Field(default_factory=dict, description="http: sent with every request (auth).")
    allow: list[str] = Field(min_length=1, description="The server's tools the agent may call; no others are offered.")
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, description="Per request: each call, the listing.")
    connect_timeout_s: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_S, gt=0, description="To start (stdio) or reach (http) the server and greet it."
    )
    tools: dict[str, McpToolOptions] = Field(default_factory=dict, description="Per allowed tool, by its server name.")

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServerSpec:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError(f"server {self.name!r}: transport stdio needs a `command`")
            if self.url or self.headers:
                raise ValueError(f"server {self.name!r}: `url` and `headers` are for transport http, not stdio")
        else:
            if not self.url:
                raise ValueError(f"server {self.name!r}: transport http needs a `url`")
            if self.command or self.args or self.env:
                raise ValueError(f"server {self.name!r}: `command`, `args` and `env` are for transport stdio, not http")
        if len(set(self.allow)) != len(self.allow):
            raise ValueError(f"server {self.name!r}: `allow` names a tool twice")
        bad = [t for t in self.allow if not TOOL_NAME.match(qualified(self.name, t))]
        if bad:
            raise ValueError(
                f"server {self.name!r}: `allow` has names that do not make a tool name "
                f"({qualified(self.name, '<tool>')} must match {TOOL_NAME.pattern}): {bad}"
            )
        unknown = sorted(set(self.tools) - set(self.allow))
        if unknown:
            raise ValueError(f"server {self.name!r}: `tools` sets options of tools not in `allow`: {unknown}")
        return self

    def qualified_names(self) -> list[str]:
        """The allowed tools as the agent knows them."""
        return [qualified(self.name, t) for t in self.allow]

    def options(self, tool: str) -> McpToolOptions:
        """The options of the server's tool ``tool`` (the defaults when none are set)."""
        return self.tools.get(tool, McpToolOptions())


def with_mcp_tools(data: Any) -> Any:
    """An agent's raw contract with its MCP servers' allowed tools added to its ``tools`` (once each).

    So ``AgentSpec.tools`` is every tool the agent may call, wherever it comes from: the runner, the
    escalation rules and the metrics see one list.
    """
    if not isinstance(data, dict) or not isinstance(data.get("mcp_servers"), list):
        return data
    tools = list(data.get("tools") or [])
    for server in data["mcp_servers"]:
        if isinstance(server, McpServerSpec):
            server = server.model_dump()
        if not isinstance(server, dict) or not isinstance(server.get("allow"), list):
            continue  # the field's own validation says what is wrong with it
        tools += [n for n in (qualified(str(server.get("name")), str(t)) for t in server["allow"]) if n not in tools]
    return {**data, "tools": tools}
