"""The step runner with the scripted provider: tool calls, corrections, limits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from handrail.contracts import AgentSpec, load_contracts
from handrail.errors import TaskHalted
from handrail.hashing import GENESIS, context_hash
from handrail.llm import ScriptedProvider
from handrail.messages import HandoffEnvelope
from handrail.metrics import labels
from handrail.tools import Tool, ToolCallError, ToolContext, ToolRegistry, ToolSpec, default_registry
from handrail_worker.guard import Ticket
from handrail_worker.runner import StepRunner

CONFIG = Path(__file__).resolve().parents[3] / "config"


def _envelope(task_input: dict[str, Any], steps: dict[str, Any] | None = None) -> HandoffEnvelope:
    context = {"input": task_input, "steps": steps or {}}
    return HandoffEnvelope(
        message_id="m",
        task_id="t",
        workflow="expense-approval",
        step="intake",
        step_index=0,
        sender="router",
        receiver="expense-intake",
        goal="g",
        context=context,
        context_hash=context_hash(context),
        parent_hash=GENESIS,
        idempotency_key="k",
    )


class OpenGuard:
    """A guard that grants every call and records what it was asked: the runner's view of the limits."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.settled: list[tuple[str, str, int]] = []

    async def start(self) -> None:
        self.asked.append("step")

    async def before_model_call(self, index: int, model: str, prompt_tokens: int, prompt: str | None = None) -> Ticket:
        self.asked.append(f"model:{model}")
        return Ticket(f"r{index}", "model_call", model, None, time.perf_counter())

    async def before_tool_call(
        self, index: int, spec: ToolSpec, args_hash: str, *, retry: bool = False
    ) -> Ticket | ToolCallError:
        self.asked.append(f"tool:{spec.name}")
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
        self.settled.append((ticket.name, outcome, input_tokens + output_tokens))


def _runner(agent: AgentSpec) -> StepRunner:
    return StepRunner(agent, ScriptedProvider(agent.plan), default_registry())


async def test_intake_agent_follows_its_plan() -> None:
    agent = load_contracts(CONFIG, default_registry().names()).agent("expense-intake")
    outcome = await _runner(agent).run(
        _envelope({"employee_id": "E101", "amount": 200, "currency": "GBP", "description": "client dinner"}),
        OpenGuard(),
    )
    assert outcome.output["employee"]["name"] == "Ben Ode"
    assert outcome.output["amount_usd"] == 254.0
    assert [d.kind for d in outcome.decisions] == ["model_call", "tool_call", "model_call", "tool_call", "model_call"]
    assert outcome.usage.model_calls == 3 and outcome.usage.tool_calls == 2 and outcome.usage.tokens > 0


async def test_every_model_and_tool_call_goes_through_the_guard() -> None:
    agent = load_contracts(CONFIG, default_registry().names()).agent("expense-intake")
    guard = OpenGuard()
    outcome = await _runner(agent).run(
        _envelope({"employee_id": "E100", "amount": 5, "currency": "USD", "description": "pens"}), guard
    )
    assert guard.asked == [
        "step",
        "model:scripted",
        "tool:lookup_employee",
        "model:scripted",
        "tool:convert_currency",
        "model:scripted",
    ]
    settled_tokens = sum(tokens for name, _, tokens in guard.settled if name == "scripted")
    assert settled_tokens == outcome.usage.tokens  # what is charged is what the provider reported


async def test_tool_failure_reaches_the_model_and_the_step_goes_on() -> None:
    agent = load_contracts(CONFIG, default_registry().names()).agent("expense-intake")
    outcome = await _runner(agent).run(
        _envelope({"employee_id": "E404", "amount": 1, "currency": "USD", "description": "x"}), OpenGuard()
    )
    failed = [d for d in outcome.decisions if d.outcome == "error"]
    assert [d.name for d in failed] == ["lookup_employee"] and "no employee" in (failed[0].error or "")
    # The scripted model copies what it saw: the error, not an employee. The validator's schema catches it.
    assert outcome.output["employee"] == {
        "error": {
            "code": "tool_failed",
            "tool": "lookup_employee",
            "message": "no employee with id 'E404'",
            "kind": "invalid_input",
            "attempts": 1,
        }
    }


def _agent(plan: list[dict[str, Any]], **limits: int) -> AgentSpec:
    return AgentSpec.model_validate(
        {
            "name": "a",
            "owner": "o",
            "purpose": "p",
            "model_chain": ["scripted"],
            "prompt": "p@1",
            "tools": ["lookup_employee"],
            "limits": limits,
            "plan": plan,
        }
    )


async def test_hallucinated_and_forbidden_tools_become_corrections() -> None:
    agent = _agent(
        [
            {"call": "wire_money", "args": {}},
            {"call": "check_policy", "args": {"amount_usd": 1}},
            {"call": "lookup_employee", "args": {"employee_id": "E100"}},
            {"answer": {"ok": True}},
        ],
        max_tool_corrections=2,
    )
    outcome = await _runner(agent).run(_envelope({}), OpenGuard())
    assert outcome.output == {"ok": True}
    rejected = [(d.name, d.error.split(":")[0]) for d in outcome.decisions if d.outcome == "rejected"]  # type: ignore[union-attr]
    assert rejected == [("wire_money", "unknown_tool"), ("check_policy", "tool_not_allowed")]
    assert outcome.usage.tool_calls == 1


async def test_a_hallucinated_tool_name_is_counted_as_unknown() -> None:
    """The ``tool`` label takes only the registry's names: a model's invention mints no time series."""
    invented = "transfer_all_funds_now"
    agent = _agent([{"call": invented, "args": {}}, {"answer": {"ok": True}}], max_tool_corrections=2)
    before = labels.declare(tools=default_registry().names())
    try:
        counted = {"agent": "a", "tool": "unknown", "outcome": "rejected"}
        was = REGISTRY.get_sample_value("handrail_tool_calls_total", counted) or 0.0
        await _runner(agent).run(_envelope({}), OpenGuard())
        assert REGISTRY.get_sample_value("handrail_tool_calls_total", counted) == was + 1
        assert REGISTRY.get_sample_value("handrail_tool_calls_total", {**counted, "tool": invented}) is None
    finally:
        labels.restore(before)


async def test_too_many_corrections_halt_the_task() -> None:
    agent = _agent([{"call": "wire_money"}, {"call": "wire_money"}, {"answer": {}}], max_tool_corrections=1)
    with pytest.raises(TaskHalted, match="more than 1 corrections") as halted:
        await _runner(agent).run(_envelope({}), OpenGuard())
    assert halted.value.error_type == "too_many_corrections"


async def test_max_turns_bounds_the_step() -> None:
    plan = [{"call": "lookup_employee", "args": {"employee_id": "E100"}}] * 3 + [{"answer": {}}]
    with pytest.raises(TaskHalted, match="no answer within its 2 model calls"):
        await _runner(_agent(plan, max_turns=2)).run(_envelope({}), OpenGuard())


def _garbage_registry() -> ToolRegistry:
    """One tool whose result breaks its own result schema."""

    async def run(args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return {"nmae": "Ada", "id": 7}

    spec = ToolSpec(
        "find_person",
        "find a person",
        {"type": "object"},
        result_schema={"type": "object", "required": ["name"], "properties": {"id": {"type": "string"}}},
    )
    return ToolRegistry([Tool(spec, run)])


async def test_a_result_that_breaks_the_tools_schema_never_reaches_the_model_as_true() -> None:
    agent = _agent([{"call": "find_person", "args": {}}, {"answer": {"ok": True}}], max_tool_corrections=1)
    agent = agent.model_copy(update={"tools": ["find_person"]})
    guard = OpenGuard()
    outcome = await StepRunner(agent, ScriptedProvider(agent.plan), _garbage_registry()).run(_envelope({}), guard)
    [decision] = [d for d in outcome.decisions if d.kind == "tool_call"]
    assert decision.outcome == "error" and decision.error is not None
    assert decision.error.startswith("invalid_result: the tool returned a result that breaks its schema")
    assert "'name' is a required property" in decision.error and "id: 7 is not of type 'string'" in decision.error
    assert ("find_person", "error", 0) in guard.settled, "it ran and is paid for, as an error"


async def test_invalid_results_count_toward_the_agents_corrections() -> None:
    plan = [{"call": "find_person", "args": {}}, {"call": "find_person", "args": {}}, {"answer": {}}]
    agent = _agent(plan, max_tool_corrections=1).model_copy(update={"tools": ["find_person"]})
    with pytest.raises(TaskHalted, match="more than 1 corrections; last: invalid_result") as halted:
        await StepRunner(agent, ScriptedProvider(agent.plan), _garbage_registry()).run(_envelope({}), OpenGuard())
    assert halted.value.error_type == "too_many_corrections"
