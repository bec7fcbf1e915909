"""MCP tools on real Kafka and Redis: workers that take tools from a real MCP server (stdio, the SDK's MCPServer)
run them through the same guard as built-in tools: the budget, the idempotency key in ``_meta``, approvals, and
the tool breaker of a server slower than its timeout."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fixtures.mcp_tools import calls_made, stdio_server
from tests.fixtures.stack import PROJECT_ROOT, Stack

from handrail.client import HandrailClient
from handrail.hashing import canonical_json, sha256_hex
from handrail.messages import DecisionEvent, DecisionEvents, ReviewRequested, TaskStatus
from handrail.state import connect_redis
from handrail.state.controls import BreakerState, ControlStore
from handrail.tools.mcp import META_IDEMPOTENCY_KEY
from handrail_dev import services

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

#: Few calls open the breaker: the test needs only a few slow tasks.
BREAKER_MIN_CALLS = 3
PROMPT = "You are ${agent}, a test agent. ${purpose}\nTask: ${goal} (step ${step}). Tools: ${tools}.\n"


def _agent(purpose: str, server: dict[str, Any], plan: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "owner": "tests",
        "purpose": purpose,
        "model_chain": ["scripted"],
        "prompt": "mcp-test@1",
        "autonomy": "audit-based",
        "mcp_servers": [server],
        "plan": plan,
    }


@pytest.fixture(scope="module")
def mcp_calls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the MCP servers the workers start log the calls they get."""
    return tmp_path_factory.mktemp("mcp-calls") / "calls.jsonl"


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory, mcp_calls: Path) -> Path:
    """The demo's contracts plus three agents whose tools come from the test MCP server."""
    config = tmp_path_factory.mktemp("mcp-config")
    agents = yaml.safe_load((PROJECT_ROOT / "config" / "agents.yaml").read_text())
    workflows = yaml.safe_load((PROJECT_ROOT / "config" / "workflows.yaml").read_text())
    billing = stdio_server(mcp_calls, tools={"lookup_invoice": {"cost_usd": 0.05}})
    agents["agents"]["invoicer"] = _agent(
        "Looks an invoice up and files a note on it.",
        billing,
        [
            {"call": "billing__lookup_invoice", "args": {"invoice_id": "${input.invoice_id}"}},
            {"call": "billing__file_note", "args": {"text": "${input.invoice_id}"}},
            {"answer": {"invoice": "${tools.billing__lookup_invoice}", "note": "${tools.billing__file_note}"}},
        ],
    )
    agents["agents"]["slowpoke"] = _agent(
        "Asks a server that is slower than its timeout.",
        {**billing, "timeout_s": 1},
        [{"call": "billing__slow", "args": {"seconds": 4}}, {"answer": {"slow": "${tools.billing__slow}"}}],
    )
    agents["agents"]["careful"] = _agent(
        "Files notes that a person approves first.",
        {**billing, "tools": {"file_note": {"requires_approval": True}}},
        [
            {"call": "billing__file_note", "args": {"text": "${input.text}"}},
            {"answer": {"note": "${tools.billing__file_note}"}},
        ],
    )
    for name, agent in (("invoice", "invoicer"), ("slow", "slowpoke"), ("careful-note", "careful")):
        workflows["workflows"][name] = {
            "goal": name,
            "input_schema": {"type": "object"},
            "steps": [{"name": "look", "agent": agent, "output_schema": {"type": "object"}}],
        }
    (config / "agents.yaml").write_text(yaml.safe_dump(agents))
    (config / "workflows.yaml").write_text(yaml.safe_dump(workflows))
    shutil.copytree(PROJECT_ROOT / "config" / "prompts", config / "prompts")
    (config / "prompts" / "mcp-test").mkdir()
    (config / "prompts" / "mcp-test" / "1.md").write_text(PROMPT)
    return config


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {"HANDRAIL_BREAKER_MIN_CALLS": str(BREAKER_MIN_CALLS), "HANDRAIL_BREAKER_COOLDOWN_S": "60"}


@pytest.fixture
async def controls(stack: Stack) -> AsyncIterator[ControlStore]:
    redis = connect_redis(stack.redis_url)
    yield ControlStore(redis, stack.env["HANDRAIL_REDIS_PREFIX"])
    await redis.aclose()


async def _events(stack: Stack, task_id: str) -> list[DecisionEvent]:
    return [
        e for v in await stack.read(stack.topics.events, task_id) for e in DecisionEvents.model_validate_json(v).events
    ]


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


async def test_an_mcp_tool_call_is_budgeted_and_carries_its_idempotency_key(
    client: HandrailClient, stack: Stack, mcp_calls: Path
) -> None:
    task_id = await client.submit("invoice", {"invoice_id": "INV-42"}, task_id=new_id("inv"))
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.output is not None
    assert result.output["invoice"] == {"invoice_id": "INV-42", "amount_usd": 120.5, "paid": False}
    assert result.output["note"] == {"filed": True, "duplicate": False}
    assert result.cost_usd >= 0.05, "the look-up's cost was charged to the task's budget"
    events = await _events(stack, task_id)
    tool_events = [(e.name, e.outcome, e.cost_usd) for e in events if e.kind == "tool_call"]
    assert tool_events == [("billing__lookup_invoice", "ok", 0.05), ("billing__file_note", "ok", 0.0)]
    made = [c for c in calls_made(mcp_calls) if c["meta"].get("handrail/task_id") == task_id]
    assert [c["tool"] for c in made] == ["lookup_invoice", "file_note"]
    # The runner's key for the call (handrail_worker.runner.idempotency_key): task, step, tool, arguments.
    key = sha256_hex(canonical_json([task_id, "look", "billing__file_note", {"text": "INV-42"}]))
    assert made[1]["meta"][META_IDEMPOTENCY_KEY] == key


async def test_an_mcp_side_effect_runs_once_even_when_the_worker_dies_right_after_it(
    client: HandrailClient, stack: Stack, mcp_calls: Path
) -> None:
    worker = "worker-invoicer"
    stack.stop(worker)
    process = stack.processes[worker]
    crashing = services.ServiceProcess(
        process.name, process.argv, process.http_port, {"HANDRAIL_CHAOS_EXIT_AFTER_TOOL": "billing__file_note"}
    )
    services.start(crashing, stack.run_dir, stack.env, PROJECT_ROOT)
    task_id = await client.submit("invoice", {"invoice_id": "INV-9"}, task_id=new_id("inv-crash"))
    assert await stack.wait_exited(worker, timeout_s=60)
    assert "chaos: exiting right after billing__file_note ran" in stack.log(worker)

    stack.start(worker)  # the step is redelivered and runs again, up to the side effect
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED and result.output is not None, result.reason
    assert result.output["note"] == {"filed": True, "duplicate": False}, "the recorded result, not a second call"
    made = [c["tool"] for c in calls_made(mcp_calls) if c["meta"].get("handrail/task_id") == task_id]
    assert made.count("file_note") == 1, made
    assert made.count("lookup_invoice") == 2, "a read-only tool is simply asked again"


async def test_an_mcp_tool_that_needs_approval_parks_the_task_for_review(
    client: HandrailClient, stack: Stack, mcp_calls: Path
) -> None:
    task_id = await client.submit("careful-note", {"text": "pay it"}, task_id=new_id("careful"))
    requests: list[ReviewRequested] = []
    for _ in range(60):
        requests = [
            ReviewRequested.model_validate_json(v) for v in await stack.read(stack.topics.reviews_requested, task_id)
        ]
        if requests:
            break
        await asyncio.sleep(0.5)
    [request] = requests
    assert request.proposal is not None and request.proposal.tool == "billing__file_note"
    assert request.proposal.arguments == {"text": "pay it"}
    assert not [c for c in calls_made(mcp_calls) if c["meta"].get("handrail/task_id") == task_id], "not run yet"


async def test_a_server_slower_than_its_timeout_opens_the_tools_breaker(
    client: HandrailClient, stack: Stack, controls: ControlStore, mcp_calls: Path
) -> None:
    slow = [await client.submit("slow", {}, task_id=new_id("slow")) for _ in range(BREAKER_MIN_CALLS)]
    for task_id in slow:
        # Each call failed; the answer after it may have been halted by the agent's own breaker (all three
        # steps run at once, and half of the agent's calls failed).
        await client.wait_for_result(task_id, timeout_s=90)
        # No answer in time is transient: tried again (read-only), until the tool's breaker opens on them.
        calls = [(e.outcome, e.error_type) for e in await _events(stack, task_id) if e.name == "billing__slow"]
        assert calls and calls[0] == ("error", "tool_timeout"), calls
        assert set(calls) <= {("error", "tool_timeout"), ("short_circuited", "tool_breaker_open")}, calls
    for _ in range(300):  # the circuit-breaker aggregates the events in batches: under load it takes a while
        if await controls.breaker_state("tool", "billing__slow") == BreakerState.OPEN:
            break
        await asyncio.sleep(0.1)
    assert await controls.breaker_state("tool", "billing__slow") == BreakerState.OPEN
    blocked = await client.submit("slow", {}, task_id=new_id("slow-blocked"))
    result = await client.wait_for_result(blocked, timeout_s=90)
    if result.output is None:
        # Every call of the agent failed, so its own breaker may be open too: the step halts before any call.
        assert result.status == TaskStatus.HALTED and "breaker" in (result.reason or ""), result.reason
    else:
        assert result.output["slow"]["error"]["code"] == "tool_unavailable", "short-circuited"
    assert not [c for c in calls_made(mcp_calls) if c["meta"].get("handrail/task_id") == blocked], "not asked"
