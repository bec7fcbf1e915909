"""Tool failures by kind, through the step runner and the real guard on real Redis.

Transient failures are tried again within the budget, invalid input goes back to the
model, permanent and auth failures fail or halt the step (auth with its alert), and a
side effect whose outcome is in doubt is never tried again. Back-offs are a millisecond:
the clock is real, the waits are short.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from handrail.contracts import AgentSpec
from handrail.errors import Rejected, TaskHalted
from handrail.hashing import GENESIS, context_hash
from handrail.llm import ScriptedProvider
from handrail.messages import DecisionEvent, HandoffEnvelope
from handrail.metrics import labels
from handrail.state import generation
from handrail.state.admission import Admissions
from handrail.state.budgets import BudgetStore, Caps
from handrail.state.controls import ControlStore
from handrail.state.effects import Claim, EffectStore
from handrail.tools import (
    Tool,
    ToolContext,
    ToolErrorKind,
    ToolFailure,
    ToolHalted,
    ToolRegistry,
    ToolSpec,
    ToolStepFailed,
)
from handrail_worker.guard import StepGuard
from handrail_worker.runner import StepOutcome, StepRunner

pytestmark = pytest.mark.bus  # real Redis

#: Tiny waits: a real clock, and a test that is not slowed by the back-off it checks.
FAST = {"base_delay_s": 0.001, "max_delay_s": 0.002}


@dataclass
class Scripted:
    """A tool that fails as told, call by call, then answers; it counts its calls."""

    failures: list[BaseException | Callable[[], Awaitable[None]]]
    calls: int = 0
    keys: list[str] = field(default_factory=list)

    async def __call__(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        self.calls += 1
        self.keys.append(ctx.idempotency_key)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, BaseException):
                raise failure
            await failure()
        return {"value": f"answer {self.calls}"}


class Events:
    """The decision events the guard emits (what goes to <prefix>events)."""

    def __init__(self) -> None:
        self.sent: list[DecisionEvent] = []

    async def emit(self, event: DecisionEvent) -> None:
        self.sent.append(event)


@dataclass
class World:
    redis: aioredis.Redis
    prefix: str
    budgets: BudgetStore
    admissions: Admissions
    effects: EffectStore


@pytest.fixture
async def world(state_redis: aioredis.Redis) -> World:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(state_redis, prefix)
    budgets, controls = BudgetStore(state_redis, prefix), ControlStore(state_redis, prefix)
    admissions = Admissions(state_redis, budgets, controls, prefix)
    return World(state_redis, prefix, budgets, admissions, EffectStore(state_redis, prefix))


def agent(policy: dict[str, Any] | None = None, **limits: Any) -> AgentSpec:
    return AgentSpec.model_validate(
        {
            "name": "retrier",
            "owner": "tests",
            "purpose": "calls one tool and answers with what it said",
            "model_chain": ["scripted"],
            "prompt": "p@1",
            "tools": ["flaky"],
            "tool_defaults": {**FAST, **(policy or {})},
            "limits": limits,
            "plan": [{"call": "flaky", "args": {"q": "x"}}, {"answer": {"said": "${tools.flaky}"}}],
        }
    )


async def never_happened(ctx: ToolContext) -> dict[str, Any] | None:
    """The target's answer to "did the effect with this key happen?": no (so only the runner stops a repeat)."""
    return None


def registry(tool: Scripted, *, side_effect: bool = False, cost_usd: float = 0.0) -> ToolRegistry:
    spec = ToolSpec(
        "flaky", "a tool that fails on purpose", {"type": "object"}, side_effect=side_effect, cost_usd=cost_usd
    )
    return ToolRegistry([Tool(spec, tool, lookup=never_happened if side_effect else None)])


async def step(
    world: World,
    spec: AgentSpec,
    tool: Scripted,
    *,
    side_effect: bool = False,
    cost_usd: float = 0.0,
    caps: Caps | None = None,
) -> tuple[StepOutcome | TaskHalted | Rejected, Events, HandoffEnvelope]:
    """One step of ``spec`` with the real guard: its outcome (or the error it ended on), the events, the envelope."""
    envelope = _envelope()
    await world.budgets.open(envelope.task_id, caps or Caps(tokens=100_000, cost_usd=10.0, steps=10), _in_a_minute())
    events = Events()
    guard = StepGuard(spec, envelope, world.budgets, world.admissions, events)
    runner = StepRunner(spec, ScriptedProvider(spec.plan), registry(tool, side_effect=side_effect, cost_usd=cost_usd))
    runner.effects = world.effects
    ended: StepOutcome | TaskHalted | Rejected
    try:
        outcome = await runner.run(envelope, guard)
        assert isinstance(outcome, StepOutcome)
        ended = outcome
    except (TaskHalted, Rejected) as exc:
        ended = exc
    finally:
        await guard.settle_pending()
    return ended, events, envelope


async def run(
    world: World, spec: AgentSpec, tool: Scripted, **options: Any
) -> tuple[StepOutcome, Events, HandoffEnvelope]:
    """A step that must complete."""
    outcome, events, envelope = await step(world, spec, tool, **options)
    assert isinstance(outcome, StepOutcome), outcome
    return outcome, events, envelope


async def failing(
    world: World, spec: AgentSpec, tool: Scripted, **options: Any
) -> tuple[TaskHalted | Rejected, Events, HandoffEnvelope]:
    """A step that must end on an error."""
    error, events, envelope = await step(world, spec, tool, **options)
    assert not isinstance(error, StepOutcome), f"the step completed: {error}"
    return error, events, envelope


def _envelope() -> HandoffEnvelope:
    context: dict[str, Any] = {"input": {}, "steps": {}}
    return HandoffEnvelope(
        message_id=f"m-{uuid.uuid4().hex}",
        task_id=f"retry-{uuid.uuid4().hex[:10]}",
        workflow="w",
        step="s",
        step_index=0,
        sender="router",
        receiver="retrier",
        goal="g",
        context=context,
        context_hash=context_hash(context),
        parent_hash=GENESIS,
        idempotency_key="k",
    )


def _in_a_minute() -> int:
    return int(time.time() * 1000) + 60_000


def tool_events(events: Events) -> list[tuple[str, str | None]]:
    return [(e.outcome, e.error_type) for e in events.sent if e.kind == "tool_call"]


def counted(metric: str, **label_values: str) -> float:
    return REGISTRY.get_sample_value(metric, label_values) or 0.0


def transient(message: str = "503 from the directory") -> ToolFailure:
    return ToolFailure(message, kind=ToolErrorKind.TRANSIENT)


async def test_a_transient_failure_is_tried_again_and_the_second_attempt_answers(world: World) -> None:
    before = counted("handrail_tool_retries_total", agent="retrier", tool=labels.tool("flaky"))
    tool = Scripted([transient()])
    outcome, events, _ = await run(world, agent(), tool)
    assert tool.calls == 2
    assert outcome.output == {"said": {"value": "answer 2"}}
    # Each attempt was admitted, reserved, settled and reported like a call of its own.
    assert tool_events(events) == [("error", "tool_transient"), ("ok", None)]
    assert [d.outcome for d in outcome.decisions if d.kind == "tool_call"] == ["ok"]
    assert counted("handrail_tool_retries_total", agent="retrier", tool=labels.tool("flaky")) == before + 1
    assert len(set(tool.keys)) == 1, "every attempt carries the call's one idempotency key"


async def test_retries_are_not_counted_in_the_loop_window(world: World) -> None:
    # One identical call allowed per window: a second attempt counted as a repeat would halt the task.
    tool = Scripted([transient(), transient()])
    outcome, events, _ = await run(world, agent({"max_attempts": 3}, loop_max_repeats=1), tool)
    assert tool.calls == 3 and outcome.output == {"said": {"value": "answer 3"}}
    assert ("halted", "loop_detected") not in tool_events(events)


async def test_a_timeout_is_transient(world: World) -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    tool = Scripted([hang])
    outcome, events, _ = await run(world, agent({"timeout_s": 0.05}), tool)
    assert tool.calls == 2 and outcome.output == {"said": {"value": "answer 2"}}
    assert tool_events(events) == [("error", "tool_timeout"), ("ok", None)]


async def test_transient_failures_past_the_attempts_reach_the_model_as_a_structured_error(world: World) -> None:
    tool = Scripted([transient(), transient(), transient(), transient()])
    outcome, events, _ = await run(world, agent({"max_attempts": 3}), tool)
    assert tool.calls == 3
    error = outcome.output["said"]["error"]
    assert error["code"] == "tool_failed" and error["kind"] == "transient" and error["attempts"] == 3
    assert [t for t in tool_events(events)] == [("error", "tool_transient")] * 3


async def test_invalid_input_is_not_retried_and_counts_as_a_correction(world: World) -> None:
    tool = Scripted([ToolFailure("no such record 'x'")])  # the default kind
    outcome, _, _ = await run(world, agent(), tool)
    assert tool.calls == 1 and outcome.output["said"]["error"]["kind"] == "invalid_input"

    strict = agent(max_tool_corrections=0)
    error, _, _ = await failing(world, strict, Scripted([ToolFailure("no such record 'x'")]))
    assert isinstance(error, TaskHalted) and error.error_type == "too_many_corrections"


async def test_a_permanent_failure_fails_the_step_without_a_retry(world: World) -> None:
    tool = Scripted([ToolFailure("the directory refuses this query", kind="permanent")])
    error, events, _ = await failing(world, agent(), tool)
    assert tool.calls == 1
    assert isinstance(error, ToolStepFailed) and error.error_type == "tool_permanent_failure"
    assert "the directory refuses this query" in error.reason
    assert tool_events(events) == [("error", "tool_permanent")]


async def test_a_permanent_failure_halts_the_step_when_the_policy_says_halt(world: World) -> None:
    tool = Scripted([ToolFailure("gone", kind="permanent")])
    error, _, _ = await failing(world, agent({"on_permanent": "halt"}), tool)
    assert tool.calls == 1 and isinstance(error, ToolHalted) and error.error_type == "tool_permanent_failure"


async def test_an_exception_that_is_not_a_tool_failure_is_permanent(world: World) -> None:
    tool = Scripted([RuntimeError("bug in the tool")])
    error, events, _ = await failing(world, agent(), tool)
    assert tool.calls == 1 and isinstance(error, ToolStepFailed)
    assert "RuntimeError: bug in the tool" in error.reason
    assert tool_events(events) == [("error", "tool_permanent")]


async def test_an_auth_failure_is_not_retried_and_raises_the_alert(world: World) -> None:
    before = counted("handrail_tool_failures_total", agent="retrier", tool=labels.tool("flaky"), kind="auth")
    tool = Scripted([ToolFailure("401: token expired", kind="auth"), transient()])
    error, events, envelope = await failing(world, agent({"max_attempts": 5}), tool)
    assert tool.calls == 1
    assert isinstance(error, ToolHalted) and error.error_type == "tool_auth_failed"  # on_auth: halt by default
    # The alert: the counter HandrailToolAuthFailures reads, and the event on <prefix>events.
    after = counted("handrail_tool_failures_total", agent="retrier", tool=labels.tool("flaky"), kind="auth")
    assert after == before + 1
    [event] = [e for e in events.sent if e.kind == "tool_call"]
    assert (event.outcome, event.error_type, event.task_id) == ("error", "tool_auth", envelope.task_id)

    failed, _, _ = await failing(world, agent({"on_auth": "fail"}), Scripted([ToolFailure("401", kind="auth")]))
    assert isinstance(failed, ToolStepFailed) and failed.error_type == "tool_auth_failed"


async def test_a_running_out_budget_stops_the_retries(world: World) -> None:
    # Each attempt costs 0.04 of the agent's 0.10: the third is refused before it runs.
    tool = Scripted([transient() for _ in range(5)])
    error, events, envelope = await failing(world, agent({"max_attempts": 5}, max_cost_usd=0.10), tool, cost_usd=0.04)
    assert tool.calls == 2
    assert isinstance(error, TaskHalted) and error.error_type == "budget_exhausted"
    assert tool_events(events) == [
        ("error", "tool_transient"),
        ("error", "tool_transient"),
        ("halted", "budget_exhausted"),
    ]
    spent = await world.budgets.usage(envelope.task_id)
    assert spent.cost_usd == pytest.approx(0.08), "every attempt that ran was charged, and nothing more"


async def test_a_side_effect_in_doubt_is_never_retried(world: World) -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    tool = Scripted([hang])
    error, events, envelope = await failing(
        world, agent({"timeout_s": 0.05, "max_attempts": 5}), tool, side_effect=True
    )
    assert tool.calls == 1, "a side effect that timed out may have happened: it is not repeated"
    assert isinstance(error, TaskHalted) and error.error_type == "side_effect_in_doubt"
    assert tool_events(events) == [("error", "tool_timeout")]
    # Its claim stays: the next attempt at the step finds it in doubt, and asks the target or a person.
    claimed = await world.effects.claim(envelope.task_id, tool.keys[0], "a-redelivery")
    assert claimed.claim == Claim.IN_DOUBT


async def test_a_side_effect_that_declared_a_transient_failure_is_retried_under_its_key(world: World) -> None:
    tool = Scripted([transient("the ledger is busy")])
    outcome, _, envelope = await run(world, agent(), tool, side_effect=True)
    assert tool.calls == 2 and outcome.output == {"said": {"value": "answer 2"}}
    assert len(set(tool.keys)) == 1
    recorded = await world.effects.claim(envelope.task_id, tool.keys[0], "a-redelivery")
    assert recorded.claim == Claim.RECORDED and recorded.result == {"value": "answer 2"}
