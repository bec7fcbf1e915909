"""A server's listed tools as registry ``Tool``s, so each call goes through the guard as a built-in one does.

What is offered is what the agent's ``allow`` names and the server lists, with valid schemas: the
server's ``inputSchema`` becomes the tool's args schema, its ``outputSchema`` (if any) its result
schema. The idempotency key, the task and the step go in the request's ``_meta`` (``META_*``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import mcp.types

from handrail.contracts.mcp import McpServerSpec, qualified
from handrail.errors import ContractError
from handrail.tools.mcp.connection import McpConnection
from handrail.tools.registry import Tool, ToolContext, ToolFailure, ToolSpec

#: The ``_meta`` keys of every tools/call: a server with side effects dedupes on the idempotency key.
META_IDEMPOTENCY_KEY = "handrail/idempotency_key"
META_TASK_ID = "handrail/task_id"
META_STEP = "handrail/step"
#: How much of a failed call's text reaches the model.
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Discovered:
    """What one listing of a server gave: the tools to register, and those refused and why."""

    server: McpServerSpec
    tools: list[Tool] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # qualified name -> why
    missing: list[str] = field(default_factory=list)  # allowed, by the server's name, but not offered
    offered: list[str] = field(default_factory=list)  # every tool the server lists, by its name

    def missing_error(self) -> ContractError:
        """The agent's contract promises tools that are not there: what to tell at start."""
        return ContractError(
            f"agents.yaml: MCP server {self.server.name!r}: `allow` names tools the server does not offer: "
            f"{self.missing} (it offers {self.offered})"
        )


def discovered(server: McpServerSpec, listed: list[mcp.types.Tool], connection: McpConnection) -> Discovered:
    """The allowed tools of ``listed`` as ``Tool``s; a tool with a schema that is not JSON Schema is refused,
    and so is an allowed tool the server does not offer (``Discovered.missing``)."""
    offered = {tool.name for tool in listed}
    found = Discovered(server, missing=[n for n in server.allow if n not in offered], offered=sorted(offered))
    for name in found.missing:
        found.refused[qualified(server.name, name)] = "the server does not offer it"
    for tool in listed:
        if tool.name not in server.allow:
            continue  # never offered to the model
        name = qualified(server.name, tool.name)
        problem = _schema_problem(tool)
        if problem is not None:
            found.refused[name] = problem
            continue
        found.tools.append(_tool(server, tool, connection))
    return found


def _schema_problem(tool: mcp.types.Tool) -> str | None:
    for what, schema in (("inputSchema", tool.input_schema), ("outputSchema", tool.output_schema)):
        if schema is None:
            continue
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            return f"its {what} is not a valid JSON Schema: {exc.message}"
    return None


def _tool(server: McpServerSpec, listed: mcp.types.Tool, connection: McpConnection) -> Tool:
    options = server.options(listed.name)
    read_only = bool(listed.annotations and listed.annotations.read_only_hint)
    spec = ToolSpec(
        name=qualified(server.name, listed.name),
        description=listed.description or listed.title or f"{listed.name} (MCP server {server.name})",
        args_schema=listed.input_schema,
        result_schema=listed.output_schema or {"type": "object"},
        side_effect=options.side_effect if options.side_effect is not None else not read_only,
        requires_approval=options.requires_approval,
        on_reject=options.on_reject,
        cost_usd=options.cost_usd,
    )

    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        meta = {META_IDEMPOTENCY_KEY: ctx.idempotency_key, META_TASK_ID: ctx.task_id, META_STEP: ctx.step}
        result = await connection.call_tool(listed.name, args, meta)
        if result.is_error:
            raise ToolFailure(_text(result)[:_MAX_ERROR_CHARS] or f"{spec.name} failed (the server gave no reason)")
        return as_result(result)

    return Tool(spec, run)


def as_result(result: mcp.types.CallToolResult) -> dict[str, Any]:
    """What the model and the next step see: the structured content, else the content blocks."""
    if isinstance(result.structured_content, dict):
        return dict(result.structured_content)
    return {"content": [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]}


def _text(result: mcp.types.CallToolResult) -> str:
    parts = [block.text for block in result.content if isinstance(block, mcp.types.TextContent)]
    return " ".join(parts) if parts else json.dumps(result.structured_content or {})
