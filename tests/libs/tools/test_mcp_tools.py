"""MCP tools from a real server (the SDK's MCPServer, its own process) over stdio and streamable HTTP:
discovery and the allow-list, the call through the runner's guard, the idempotency key in ``_meta``,
a server that is down or slow, a session that drops, a server that comes up late."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.mcp_tools import calls_made, http_server, serving_http, stdio_server
from tests.fixtures.stack import free_port

from handrail.contracts import AgentSpec
from handrail.contracts.mcp import McpServerSpec
from handrail.errors import ContractError
from handrail.hashing import GENESIS, context_hash
from handrail.llm import ScriptedProvider
from handrail.messages import HandoffEnvelope
from handrail.tools import ToolCallError, ToolContext, ToolFailure, ToolRegistry, ToolSpec, default_registry
from handrail.tools.mcp import META_IDEMPOTENCY_KEY, McpConnection, McpToolset, McpUnavailable, discover
from handrail_worker.guard import Ticket
from handrail_worker.runner import StepRunner, idempotency_key

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["stdio", "http"])
def server_entry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """The test server's ``mcp_servers`` entry over each transport, and the file its calls go to."""
    calls = tmp_path / "calls.jsonl"
    if request.param == "stdio":
        yield stdio_server(calls), calls
        return
    with serving_http(calls) as url:
        yield http_server(url), calls


def _agent(
    server: dict[str, Any], plan: list[dict[str, Any]] | None = None, tools: list[str] | None = None
) -> AgentSpec:
    return AgentSpec.model_validate(
        {
            "name": "billing-agent",
            "owner": "o",
            "purpose": "p",
            "model_chain": ["scripted"],
            "prompt": "p@1",
            "tools": tools or [],
            "mcp_servers": [server],
            "plan": plan or [{"answer": {}}],
        }
    )


def _envelope() -> HandoffEnvelope:
    context: dict[str, Any] = {"input": {}, "steps": {}}
    return HandoffEnvelope(
        message_id="m1",
        task_id="task-1",
        workflow="billing",
        step="look",
        step_index=0,
        sender="router",
        receiver="billing-agent",
        goal="g",
        context=context,
        context_hash=context_hash(context),
        parent_hash=GENESIS,
        idempotency_key="k",
    )


class RecordingGuard:
    """Grants every call and records what the runner asked of it and how each call ended."""

    def __init__(self) -> None:
        self.tools: list[ToolSpec] = []
        self.settled: list[tuple[str, str, str | None, float]] = []

    async def start(self) -> None:
        return None

    async def before_model_call(self, index: int, model: str, prompt_tokens: int, prompt: str | None = None) -> Ticket:
        return Ticket(f"r{index}", "model_call", model, None, time.perf_counter())

    async def before_tool_call(
        self, index: int, spec: ToolSpec, args_hash: str, *, retry: bool = False
    ) -> Ticket | ToolCallError:
        self.tools.append(spec)
        return Ticket(f"r{index}", "tool_call", spec.name, args_hash, time.perf_counter())

    async def after_call(
        self,
        ticket: Ticket,
        outcome: str,
        error_type: str | None = None,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        self.settled.append((ticket.name, outcome, error_type, cost_usd))


async def _started(agent: AgentSpec, registry: ToolRegistry | None = None) -> tuple[McpToolset, ToolRegistry]:
    registry = registry or default_registry()
    toolset = McpToolset(agent, registry, retry_first_s=0.2, retry_max_s=0.5)
    await toolset.start()
    return toolset, registry


async def test_only_allowed_tools_with_valid_schemas_are_registered(server_entry: tuple[dict[str, Any], Path]) -> None:
    entry, _ = server_entry
    agent = _agent({**entry, "allow": [*entry["allow"], "broken_schema"], "tools": {"slow": {"cost_usd": 0.02}}})
    toolset, registry = await _started(agent)
    try:
        mcp_names = {n for n in registry.names() if n.startswith("billing__")}
        # not_allowed is listed by the server but never offered; broken_schema's inputSchema is not JSON Schema.
        assert mcp_names == {"billing__lookup_invoice", "billing__file_note", "billing__slow"}
        assert agent.tools == [
            "billing__lookup_invoice",
            "billing__file_note",
            "billing__slow",
            "billing__broken_schema",
        ]
        lookup = registry.get("billing__lookup_invoice")
        assert lookup is not None
        assert lookup.spec.args_schema["required"] == ["invoice_id"]
        assert (
            lookup.spec.result_schema["type"] == "object" and "title" in lookup.spec.result_schema
        )  # its outputSchema
        assert lookup.spec.side_effect is False  # the server says it only reads
        note, slow = registry.get("billing__file_note"), registry.get("billing__slow")
        assert note is not None and note.spec.side_effect is True  # says nothing: taken to change something
        assert slow is not None and slow.spec.cost_usd == 0.02
        specs = [s.name for s in registry.specs(agent.tools)]
        assert "billing__broken_schema" not in specs and "billing__not_allowed" not in specs
    finally:
        await toolset.close()


async def test_an_allowed_tool_the_server_does_not_offer_stops_the_start(
    server_entry: tuple[dict[str, Any], Path],
) -> None:
    entry, _ = server_entry
    agent = _agent({**entry, "allow": ["lookup_invoice", "refund_everything"]})
    with pytest.raises(ContractError, match=r"does not offer: \['refund_everything'\]"):
        await _started(agent)


async def test_a_call_runs_through_the_guard_with_the_idempotency_key_in_meta(
    server_entry: tuple[dict[str, Any], Path],
) -> None:
    entry, calls = server_entry
    plan = [
        {"call": "billing__lookup_invoice", "args": {"invoice_id": "INV-7"}},
        {"call": "billing__file_note", "args": {"text": "checked"}},
        {"answer": {"invoice": "${tools.billing__lookup_invoice}", "note": "${tools.billing__file_note}"}},
    ]
    agent = _agent({**entry, "tools": {"lookup_invoice": {"cost_usd": 0.05}}}, plan)
    toolset, registry = await _started(agent)
    try:
        guard = RecordingGuard()
        envelope = _envelope()
        outcome = await StepRunner(agent, ScriptedProvider(agent.plan), registry).run(envelope, guard)
    finally:
        await toolset.close()
    assert not isinstance(outcome, type(None))
    assert outcome.output["invoice"] == {"invoice_id": "INV-7", "amount_usd": 120.5, "paid": False}  # type: ignore[union-attr]
    assert [s.name for s in guard.tools] == ["billing__lookup_invoice", "billing__file_note"]
    assert guard.tools[0].cost_usd == 0.05  # reserved before the call
    assert [(n, o, c) for n, o, _, c in guard.settled if n.startswith("billing")] == [
        ("billing__lookup_invoice", "ok", 0.05),
        ("billing__file_note", "ok", 0.0),
    ]
    made = calls_made(calls)
    assert [c["tool"] for c in made] == ["lookup_invoice", "file_note"]
    expected = idempotency_key(envelope, "billing__file_note", {"text": "checked"})
    assert made[1]["meta"][META_IDEMPOTENCY_KEY] == expected
    assert made[1]["meta"]["handrail/task_id"] == "task-1" and made[1]["meta"]["handrail/step"] == "look"


async def test_a_slow_call_is_a_tool_failure_the_breaker_hears_of(server_entry: tuple[dict[str, Any], Path]) -> None:
    entry, _ = server_entry
    plan = [{"call": "billing__slow", "args": {"seconds": 5}}, {"answer": {"slow": "${tools.billing__slow}"}}]
    agent = _agent({**entry, "timeout_s": 1}, plan)
    toolset, registry = await _started(agent)
    try:
        guard = RecordingGuard()
        outcome = await StepRunner(agent, ScriptedProvider(agent.plan), registry).run(_envelope(), guard)
        # The session survives a slow call: the next one is answered.
        tool = registry.get("billing__lookup_invoice")
        assert tool is not None
        assert (await tool.run({"invoice_id": "A"}, ToolContext("t", "s", "k")))["invoice_id"] == "A"
    finally:
        await toolset.close()
    # No answer in time is a transient failure of unknown outcome: a read-only tool is tried again.
    attempts = agent.tool_policy("billing__slow").max_attempts
    assert [(n, o, e) for n, o, e, _ in guard.settled if n == "billing__slow"] == [
        ("billing__slow", "error", "tool_timeout")
    ] * attempts
    error = outcome.output["slow"]["error"]  # type: ignore[union-attr]
    assert error["code"] == "tool_failed" and "did not answer within 1s" in error["message"]
    assert (error["kind"], error["attempts"]) == ("transient", attempts)


async def test_a_failing_tool_reports_its_reason(server_entry: tuple[dict[str, Any], Path]) -> None:
    entry, _ = server_entry
    toolset, registry = await _started(_agent(entry))
    try:
        tool = registry.get("billing__lookup_invoice")
        assert tool is not None
        with pytest.raises(ToolFailure, match="no invoice 'missing'") as failed:
            await tool.run({"invoice_id": "missing"}, ToolContext("t", "s", "k"))
        assert not isinstance(failed.value, McpUnavailable)
    finally:
        await toolset.close()


async def test_a_server_that_is_down_fails_calls_quickly_and_is_listed_when_it_comes_up(tmp_path: Path) -> None:
    calls, port = tmp_path / "calls.jsonl", free_port()
    agent = _agent(http_server(f"http://127.0.0.1:{port}/mcp", timeout_s=5), tools=["lookup_employee"])
    toolset, registry = await _started(agent)  # down at start: the worker starts anyway
    try:
        assert "billing__lookup_invoice" not in registry.names()
        assert registry.get("lookup_employee") is not None  # the agent's other tools work
        refused = registry.check_call("billing__lookup_invoice", {"invoice_id": "A"}, agent.tools)
        assert refused is not None and refused.code == "tool_unavailable"
        connection = toolset.connections["billing"]
        started = time.monotonic()
        with pytest.raises(McpUnavailable, match="cannot be reached"):
            await connection.call_tool("lookup_invoice", {"invoice_id": "A"}, {})
        assert time.monotonic() - started < 5, "a refused connection fails at once, not at the timeout"
        with serving_http(calls, port):
            for _ in range(100):
                if "billing__lookup_invoice" in registry.names():
                    break
                await asyncio.sleep(0.1)
            tool = registry.get("billing__lookup_invoice")
            assert tool is not None, "listed once the server answered"
            assert (await tool.run({"invoice_id": "B"}, ToolContext("t", "s", "k")))["invoice_id"] == "B"
    finally:
        await toolset.close()


async def test_a_dropped_stdio_session_is_opened_again(tmp_path: Path) -> None:
    spec = McpServerSpec.model_validate(stdio_server(tmp_path / "calls.jsonl", timeout_s=10))
    connection = McpConnection(spec)
    try:
        found = await discover(spec, connection)
        lookup = next(t for t in found.tools if t.spec.name == "billing__lookup_invoice")
        ctx = ToolContext("t", "s", "k")
        assert (await lookup.run({"invoice_id": "A"}, ctx))["invoice_id"] == "A"
        first = _server_pids()
        assert len(first) == 1
        os.kill(first[0], signal.SIGKILL)
        await asyncio.sleep(0.5)  # its stdout closes
        with pytest.raises(McpUnavailable, match="closed the connection"):
            await lookup.run({"invoice_id": "B"}, ctx)  # the call that finds the session closed fails
        assert (await lookup.run({"invoice_id": "B"}, ctx))["invoice_id"] == "B"
        assert len(_server_pids()) == 1 and _server_pids() != first, "a new server process, one at a time"
    finally:
        await connection.close()
    assert _server_pids() == [], "close stops the server's process"


def _server_pids() -> list[int]:
    """This process's test MCP servers (stdio children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if ppid == os.getpid() and "serve.py" in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


async def test_http_headers_reach_the_server_with_variables_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_TEST_TOKEN", "s3cret")
    calls = tmp_path / "calls.jsonl"
    with serving_http(calls) as url:
        spec = McpServerSpec.model_validate(http_server(url, headers={"Authorization": "Bearer ${MCP_TEST_TOKEN}"}))
        connection = McpConnection(spec)
        try:
            await connection.call_tool("lookup_invoice", {"invoice_id": "A"}, {})
        finally:
            await connection.close()
    assert [c["authorization"] for c in calls_made(calls)] == ["Bearer s3cret"]


async def test_an_http_server_that_goes_away_fails_the_call_and_is_reached_again_when_it_is_back(
    tmp_path: Path,
) -> None:
    calls, port = tmp_path / "calls.jsonl", free_port()
    spec = McpServerSpec.model_validate(http_server(f"http://127.0.0.1:{port}/mcp", timeout_s=5))
    connection = McpConnection(spec)
    try:
        with serving_http(calls, port):
            await connection.call_tool("lookup_invoice", {"invoice_id": "A"}, {})
        with pytest.raises(McpUnavailable):  # stopped: the session's transport fails, the call with it
            await connection.call_tool("lookup_invoice", {"invoice_id": "B"}, {})
        with serving_http(calls, port):
            reply = await connection.call_tool("lookup_invoice", {"invoice_id": "C"}, {})
        assert reply.structured_content == {"invoice_id": "C", "amount_usd": 120.5, "paid": False}
    finally:
        await connection.close()
    assert [c["args"]["invoice_id"] for c in calls_made(calls)] == ["A", "C"]
