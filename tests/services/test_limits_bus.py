"""Bounded autonomy on real Kafka and Redis: budgets, loops, bad tool calls, breakers, deadlines, side effects."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fixtures.stack import PROJECT_ROOT, Stack

from handrail.client import HandrailClient
from handrail.messages import ControlRecord, DecisionEvent, DecisionEvents, ReviewRequested, StepCompleted, TaskStatus
from handrail.state import connect_redis
from handrail.state.controls import BreakerState, ControlStore

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

HERE = Path(__file__).parent
#: Small enough that the breaker test needs only a few calls and a short wait.
BREAKER_MIN_CALLS = 3
# Long enough that a task submitted right after the trip reaches its tool call while the breaker
# is still open, even on a loaded 2-core machine (the window the test relies on).
BREAKER_COOLDOWN_S = 6.0


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's contracts plus the misbehaving test agents."""
    config = tmp_path_factory.mktemp("limits-config")
    for name in ("agents", "workflows"):
        merged = yaml.safe_load((PROJECT_ROOT / "config" / f"{name}.yaml").read_text())
        merged[name].update(yaml.safe_load((HERE / "config" / f"limits-{name}.yaml").read_text())[name])
        (config / f"{name}.yaml").write_text(yaml.safe_dump(merged))
    # Every agent's declared prompt must load: the demo's, and the test agents' own.
    shutil.copytree(PROJECT_ROOT / "config" / "prompts", config / "prompts")
    shutil.copytree(HERE / "config" / "prompts", config / "prompts", dirs_exist_ok=True)
    return config


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {
        "HANDRAIL_BREAKER_MIN_CALLS": str(BREAKER_MIN_CALLS),
        "HANDRAIL_BREAKER_COOLDOWN_S": str(BREAKER_COOLDOWN_S),
    }


@pytest.fixture
async def controls(stack: Stack) -> AsyncIterator[ControlStore]:
    redis = connect_redis(stack.redis_url)
    yield ControlStore(redis, stack.env["HANDRAIL_REDIS_PREFIX"])
    await redis.aclose()


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


async def events_for(stack: Stack, task_id: str) -> list[DecisionEvent]:
    return [
        e for v in await stack.read(stack.topics.events, task_id) for e in DecisionEvents.model_validate_json(v).events
    ]


async def test_a_budget_halts_the_task_before_the_call_that_would_overspend(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = await client.submit("budget-test", {}, task_id=new_id("spend"))
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.HALTED and result.error_type == "budget_exhausted"
    assert "agent budget for tokens exhausted" in (result.reason or "")
    events = await events_for(stack, task_id)
    model_calls = [e for e in events if e.kind == "model_call" and e.outcome == "ok"]
    assert 1 < len(model_calls) < 11, "some calls ran, and the plan was cut short"
    assert sum(e.input_tokens + e.output_tokens for e in model_calls) <= 1200
    assert events[-1].outcome == "halted" and events[-1].error_type == "budget_exhausted"
    assert result.tokens <= 1200


async def test_a_looping_agent_is_halted_on_its_fourth_identical_call(client: HandrailClient, stack: Stack) -> None:
    task_id = await client.submit("loop-test", {}, task_id=new_id("loop"))
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.HALTED and result.error_type == "loop_detected"
    assert "lookup_employee called 4 times with the same arguments" in (result.reason or "")
    tool_calls = [e for e in await events_for(stack, task_id) if e.kind == "tool_call"]
    assert [e.outcome for e in tool_calls] == ["ok", "ok", "ok", "halted"]
    # The circuit-breaker service announces the halt on the control topic and the audit trail.
    for _ in range(30):
        records = [
            ControlRecord.model_validate_json(v) for v in await stack.read(stack.topics.control, f"halt:task:{task_id}")
        ]
        if records:
            break
    assert records and records[-1].state == "halted" and "loop_detected" in records[-1].reason


async def test_hallucinated_tools_and_bad_arguments_get_structured_errors(client: HandrailClient, stack: Stack) -> None:
    task_id = await client.submit("tools-test", {}, task_id=new_id("halluc"))
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.COMPLETED and result.output == {"name": "Ada Park"}
    [step] = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
    tool_decisions = [
        (d.name, d.outcome, (d.error or "").split(":")[0]) for d in step.decisions if d.kind == "tool_call"
    ]
    assert tool_decisions == [
        ("wire_money", "rejected", "unknown_tool"),
        ("lookup_employee", "rejected", "invalid_arguments"),
        ("lookup_employee", "ok", ""),
    ]


async def test_a_failing_tool_opens_its_breaker_which_closes_after_a_successful_trial(
    client: HandrailClient, stack: Stack, controls: ControlStore
) -> None:
    failing = [
        await client.submit("fx-test", {"amount": 5, "currency": "XXX"}, task_id=new_id("fx-bad"))
        for _ in range(BREAKER_MIN_CALLS)
    ]
    for task_id in failing:
        await client.wait_for_result(task_id, timeout_s=60)
    for _ in range(300):  # the circuit-breaker aggregates the events in batches: under load it takes a while
        if await controls.breaker_state("tool", "convert_currency") == BreakerState.OPEN:
            break
        await asyncio.sleep(0.1)
    assert await controls.breaker_state("tool", "convert_currency") == BreakerState.OPEN

    # While open, calls are short-circuited: the tool does not run and the model is told why.
    blocked = await client.submit("fx-test", {"amount": 5, "currency": "USD"}, task_id=new_id("fx-blocked"))
    await client.wait_for_result(blocked, timeout_s=60)
    [step] = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, blocked)]
    tool_calls = [d.outcome for d in step.decisions if d.kind == "tool_call"]
    if step.status == "halted":
        # Under load the failures may also have opened the agent's breaker: the step halts before any
        # call - the tool did not run either way.
        assert tool_calls == [] and step.reason is not None and "breaker" in step.reason, step.reason
    else:
        assert tool_calls == ["short_circuited"]
        assert step.output["converted"]["error"]["code"] == "tool_unavailable"

    await asyncio.sleep(BREAKER_COOLDOWN_S + 0.5)
    healed = await client.submit("fx-test", {"amount": 5, "currency": "USD"}, task_id=new_id("fx-ok"))
    result = await client.wait_for_result(healed, timeout_s=60)
    assert result.output == {"converted": {"amount_usd": 5.0, "rate": 1.0, "currency": "USD"}}
    for _ in range(300):
        if await controls.breaker_state("tool", "convert_currency") == BreakerState.CLOSED:
            break
        await asyncio.sleep(0.1)
    assert await controls.breaker_state("tool", "convert_currency") == BreakerState.CLOSED
    states = [
        ControlRecord.model_validate_json(v).state
        for v in await stack.read(stack.topics.control, "breaker:tool:convert_currency")
    ]
    assert states == ["open", "closed"]


async def _late(client: HandrailClient, stack: Stack, workflow: str) -> str:
    intake = "worker-expense-intake"
    stack.stop(intake)
    try:
        claim = {"employee_id": "E100", "amount": 10, "currency": "USD", "description": "pens"}
        task_id = await client.submit(workflow, claim, task_id=new_id("late"), deadline_s=0.5)
        await asyncio.sleep(1.0)
    finally:
        stack.start(intake)
    return task_id


async def test_a_task_past_its_deadline_halts(client: HandrailClient, stack: Stack) -> None:
    task_id = await _late(client, stack, "plain-expense")
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.HALTED and result.error_type == "deadline_exceeded"
    assert result.steps == 0, "no step ran after the deadline"


async def test_a_task_past_its_deadline_waits_for_a_person_where_one_may_grant_more_time(
    client: HandrailClient, stack: Stack
) -> None:
    """The demo workflow's max_top_up grants wall clock: the halt is parked for review, not ended."""
    task_id = await _late(client, stack, "expense-approval")
    for _ in range(120):
        if requests := await stack.read(stack.topics.reviews_requested, task_id):
            break
        await asyncio.sleep(0.5)
    [request] = [ReviewRequested.model_validate_json(v) for v in requests]
    assert request.halt_error_type == "deadline_exceeded" and request.halted is not None
    assert await stack.results_for(task_id) == []


async def test_an_operator_halt_stops_the_task_and_resume_lifts_it(
    client: HandrailClient, stack: Stack, controls: ControlStore
) -> None:
    await controls.halt("agent", "expense-intake", "suspicious spending", "operator:test")
    try:
        claim = {"employee_id": "E100", "amount": 10, "currency": "USD", "description": "pens"}
        stopped = await client.submit("expense-approval", claim, task_id=new_id("op-halt"))
        result = await client.wait_for_result(stopped, timeout_s=60)
        assert result.status == TaskStatus.HALTED and result.error_type == "halted_by_operator"
        assert "suspicious spending" in (result.reason or "")
    finally:
        await controls.resume("agent", "expense-intake")
    claim = {"employee_id": "E100", "amount": 10, "currency": "USD", "description": "pens"}
    after = await client.submit("expense-approval", claim, task_id=new_id("op-resumed"))
    assert (await client.wait_for_result(after, timeout_s=60)).status == TaskStatus.COMPLETED


def ledger_entries(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    ledger = stack.run_dir / "data" / "expense-ledger.jsonl"
    if not ledger.exists():
        return []
    return [e for e in map(json.loads, ledger.read_text().splitlines()) if e["task_id"] == task_id]


async def test_a_side_effect_runs_once_even_when_the_worker_dies_right_after_it(
    client: HandrailClient, stack: Stack
) -> None:
    approver = "worker-expense-approver"
    stack.stop(approver)
    # Ready before the task goes in: a worker still starting up is not one that died at the side effect.
    stack.start(approver, extra_env={"HANDRAIL_CHAOS_EXIT_AFTER_TOOL": "record_decision"})
    claim = {"employee_id": "E101", "amount": 300, "currency": "USD", "description": "headset"}
    task_id = await client.submit("expense-approval", claim, task_id=new_id("effect"))
    assert await stack.wait_exited(approver, timeout_s=60)
    assert "chaos: exiting right after record_decision ran" in stack.log(approver)
    assert len(ledger_entries(stack, task_id)) == 1

    stack.start(approver)  # the step is redelivered and runs again, up to the side effect
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED and result.output is not None
    assert result.output["decision"] == "approved"
    assert len(ledger_entries(stack, task_id)) == 1, "the side effect ran twice"
