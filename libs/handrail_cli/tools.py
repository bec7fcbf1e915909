"""``handrail tools list --agent A``: every tool an agent may call, where it comes from, its flags and schemas.

Built-in tools come from the registry; an agent's MCP tools from listing its servers now, as its
worker does at start (a stdio server is started for the listing and stopped after it). Exits 1
when a server cannot be reached or a tool would not be offered, so a script can check a
deployment's tools before it starts the worker.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer

from handrail.contracts import AgentSpec, load_contracts
from handrail.contracts.mcp import McpServerSpec
from handrail.errors import ContractError
from handrail.tools import ToolRegistry, ToolSpec, default_registry
from handrail.tools.mcp import Discovered, McpConnection, McpUnavailable, discover
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings

app = typer.Typer(no_args_is_help=True, help="The tools agents may call: built-in and from MCP servers.")


@app.command("list")
def list_(
    agent: str | None = typer.Option(
        None, "--agent", help="The agent (agents.yaml); without it, every in-process tool."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Each tool the agent may call: its source (plugin:<entry point> or mcp:<server>), side effect, approval,
    cost, schemas. Without --agent: every in-process tool the installed plugins register."""
    settings = CliSettings()
    try:
        registry = default_registry()
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None
    if agent is None:
        every = [_in_process(name, registry) for name in sorted(registry.names())]
        print_json_lines(every) if as_json else _print(every)
        return
    try:
        spec = load_contracts(settings.config_dir, registry.names()).agent(agent)
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None
    listings = run(_list_servers(spec.mcp_servers))
    rows = [_row(name, spec, registry, listings) for name in spec.tools]
    if as_json:
        print_json_lines(rows)
    else:
        _print(rows)
    problems = [row for row in rows if row["status"] != "ok"]
    if problems:
        err_console.print(f"{len(problems)} of {len(rows)} tools of {agent!r} would not be offered (see status)")
        raise typer.Exit(ExitCode.FAILED)


async def _list_servers(servers: list[McpServerSpec]) -> dict[str, Discovered | str]:
    """Each server's listing, or why it could not be listed."""

    async def one(server: McpServerSpec) -> Discovered | str:
        connection = McpConnection(server)
        try:
            return await discover(server, connection)
        except McpUnavailable as exc:
            return str(exc)
        finally:
            await connection.close()

    found = await asyncio.gather(*(one(s) for s in servers))
    return {server.name: result for server, result in zip(servers, found, strict=True)}


def _in_process(name: str, registry: ToolRegistry) -> dict[str, Any]:
    tool = registry.get(name)
    spec = tool.spec if tool is not None else None
    return _described(name, registry.origin(name) or "in-process", spec, "ok" if spec else "not registered")


def _row(name: str, agent: AgentSpec, registry: ToolRegistry, listings: dict[str, Discovered | str]) -> dict[str, Any]:
    server = next((s for s in agent.mcp_servers if name in s.qualified_names()), None)
    if server is None:
        return _in_process(name, registry)
    listing = listings[server.name]
    source = f"mcp:{server.name}"
    if isinstance(listing, str):
        return _described(name, source, None, f"unavailable: {listing}")
    found = next((t.spec for t in listing.tools if t.spec.name == name), None)
    return _described(name, source, found, "ok" if found else f"refused: {listing.refused.get(name, 'not listed')}")


def _described(name: str, source: str, spec: ToolSpec | None, status: str) -> dict[str, Any]:
    return {
        "tool": name,
        "source": source,
        "status": status,
        "description": spec.description if spec else None,
        "side_effect": spec.side_effect if spec else None,
        "requires_approval": spec.requires_approval if spec else None,
        "cost_usd": spec.cost_usd if spec else None,
        "args_schema": spec.args_schema if spec else None,
        "result_schema": spec.result_schema if spec else None,
    }


def _print(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        flags = "unknown flags"
        if row["side_effect"] is not None:
            flags = ", ".join(
                [
                    "side effect" if row["side_effect"] else "no side effect",
                    "approval" if row["requires_approval"] else "no approval",
                    f"${row['cost_usd']:g}",
                ]
            )
        status = row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/red]"
        console.print(f"[bold]{row['tool']}[/bold]  {row['source']}  {flags}  {status}", highlight=False)
        if row["description"]:
            console.print(f"  {row['description']}", markup=False, highlight=False)
        for label in ("args", "result"):
            schema = row[f"{label}_schema"]
            if schema is not None:
                console.print(f"  {label}: {json.dumps(schema, sort_keys=True)}", markup=False, highlight=False)
