"""One bounded step: model call -> tool calls -> observations ... -> an answer.

Every call goes through the step's guard (halts, breakers, loop window,
budget). Every model-proposed tool call is checked against the registry and
the agent's allowed tools before it runs; a rejected call becomes a structured
error the model sees, and too many of them fail the step. Side-effecting tools
run at most once per idempotency key (task, step, tool, canonical arguments).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from handrail.contracts import AgentSpec
from handrail.errors import TaskHalted
from handrail.metrics import TOOL_CALLS
from handrail.hashing import canonical_json, sha256_hex
from handrail.llm import ChatMessage, ModelProvider, ModelRequest
from handrail.messages import Decision, HandoffEnvelope, Usage
from handrail.state.effects import Claim, EffectStore
from handrail.tools import ToolCallError, ToolContext, ToolFailure, ToolRegistry, ToolSpec
from handrail_worker.guard import Ticket


class Guard(Protocol):
    """The checks around a step's calls (``handrail_worker.guard.StepGuard``)."""

    async def start(self) -> None: ...
    async def before_model_call(self, index: int, model: str, prompt_chars: int) -> Ticket: ...
    async def before_tool_call(self, index: int, spec: ToolSpec, args_hash: str) -> Ticket | ToolCallError: ...
    async def after_call(
        self,
        ticket: Ticket,
        outcome: str,
        error_type: str | None = None,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None: ...


@dataclass
class StepOutcome:
    """What a step produced and what it cost."""

    output: dict[str, Any]
    confidence: float | None
    decisions: list[Decision] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


@dataclass
class _Tally:
    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    corrections: int = 0

    def usage(self) -> Usage:
        return Usage(
            model_calls=self.model_calls,
            tool_calls=self.tool_calls,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
        )


class StepRunner:
    """Runs steps for one agent with its model provider and tools."""

    def __init__(
        self,
        agent: AgentSpec,
        provider: ModelProvider,
        tools: ToolRegistry,
        effects: EffectStore | None = None,
        on_effect_recorded: Callable[[str], None] | None = None,
    ) -> None:
        self.agent = agent
        self.provider = provider
        self.tools = tools
        self.effects = effects
        # Fault injection for crash drills: called with the tool's name once its effect is recorded.
        self.on_effect_recorded = on_effect_recorded

    async def run(self, envelope: HandoffEnvelope, guard: Guard) -> StepOutcome:
        """Run the step ``envelope`` hands over; ``StepFailed`` or ``TaskHalted`` if it cannot finish."""
        agent = self.agent
        await guard.start()
        messages = [
            ChatMessage("system", f"You are {agent.name}. {agent.purpose} (prompt {agent.prompt})"),
            ChatMessage(
                "user", json.dumps({"goal": envelope.goal, "step": envelope.step, "context": envelope.context})
            ),
        ]
        specs = self.tools.specs(agent.tools)
        decisions: list[Decision] = []
        tally = _Tally()
        model = agent.model_chain[0]
        calls = 0
        for _ in range(agent.limits.max_turns):
            calls += 1
            ticket = await guard.before_model_call(calls, model, sum(len(m.content) for m in messages))
            try:
                reply = await self.provider.complete(ModelRequest(model=model, messages=messages, tools=specs))
            except Exception as exc:
                await guard.after_call(ticket, "error", type(exc).__name__)
                raise
            await guard.after_call(
                ticket,
                "ok",
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
                cost_usd=reply.cost_usd,
            )
            tally.model_calls += 1
            tally.input_tokens += reply.input_tokens
            tally.output_tokens += reply.output_tokens
            tally.cost_usd += reply.cost_usd
            decisions.append(
                Decision(
                    kind="model_call",
                    name=f"{reply.provider}/{reply.model}",
                    outcome="ok",
                    latency_ms=_ms_since(ticket.started),
                    input_tokens=reply.input_tokens,
                    output_tokens=reply.output_tokens,
                )
            )
            if reply.answer is not None:
                return StepOutcome(reply.answer, reply.confidence, decisions, tally.usage())
            if not reply.tool_calls:
                self._correct(tally, "the model answered with neither a tool call nor an answer")
                messages.append(ChatMessage("user", "Reply with a tool call or a final JSON answer."))
                continue
            messages.append(ChatMessage("assistant", tool_calls=reply.tool_calls))
            for call in reply.tool_calls:
                calls += 1
                observation, decision = await self._call_tool(envelope, guard, calls, call.name, call.arguments)
                decisions.append(decision)
                TOOL_CALLS.labels(agent.name, decision.name, decision.outcome).inc()
                if decision.outcome == "rejected":
                    self._correct(tally, decision.error or "rejected tool call")
                elif decision.outcome != "short_circuited":
                    tally.tool_calls += 1
                messages.append(ChatMessage("tool", json.dumps(observation), tool_call_id=call.id, name=call.name))
        raise TaskHalted(
            f"agent {agent.name!r} gave no answer within its {agent.limits.max_turns} model calls per step",
            error_type="turns_exhausted",
            task_id=envelope.task_id,
        )

    async def _call_tool(
        self, envelope: HandoffEnvelope, guard: Guard, index: int, name: str, args: Any
    ) -> tuple[dict[str, Any], Decision]:
        started = time.perf_counter()
        args_hash = sha256_hex(canonical_json(args)) if isinstance(args, dict) else None
        error = self.tools.check_call(name, args, self.agent.tools)
        if error is not None:
            return error.as_observation(), Decision(
                kind="tool_call",
                name=name,
                outcome="rejected",
                args_hash=args_hash,
                error=f"{error.code}: {error.message}",
                latency_ms=_ms_since(started),
            )
        tool = self.tools.get(name)
        # check_call vouched for both
        assert tool is not None
        assert args_hash is not None
        granted = await guard.before_tool_call(index, tool.spec, args_hash)
        if isinstance(granted, ToolCallError):
            return granted.as_observation(), Decision(
                kind="tool_call",
                name=name,
                outcome="short_circuited",
                args_hash=args_hash,
                error=f"{granted.code}: {granted.message}",
                latency_ms=_ms_since(started),
            )
        # The key is the task, the step, the tool and the canonical arguments: nothing that changes on redelivery.
        key = sha256_hex(canonical_json([envelope.task_id, envelope.step, name, args]))
        context = ToolContext(task_id=envelope.task_id, step=envelope.step, idempotency_key=key)
        try:
            result = await self._run(tool.spec, tool.run, args, context, envelope)
        except ToolFailure as exc:
            await guard.after_call(granted, "error", "tool_failed")
            failure = ToolCallError("tool_failed", name, str(exc))
            return failure.as_observation(), Decision(
                kind="tool_call",
                name=name,
                outcome="error",
                args_hash=args_hash,
                error=f"tool_failed: {exc}",
                latency_ms=_ms_since(started),
            )
        await guard.after_call(granted, "ok", cost_usd=tool.spec.cost_usd)
        return result, Decision(
            kind="tool_call", name=name, outcome="ok", args_hash=args_hash, latency_ms=_ms_since(started)
        )

    async def _run(
        self, spec: ToolSpec, run: Any, args: dict[str, Any], context: ToolContext, envelope: HandoffEnvelope
    ) -> dict[str, Any]:
        if not spec.side_effect or self.effects is None:
            result: dict[str, Any] = await run(args, context)
            return result
        claimed = await self.effects.claim(envelope.task_id, context.idempotency_key, envelope.message_id)
        if claimed.claim == Claim.RECORDED:
            assert claimed.result is not None
            return claimed.result  # it ran before this redelivery: never twice
        if claimed.claim == Claim.IN_DOUBT:
            raise TaskHalted(
                f"{spec.name} may or may not have run (an earlier attempt died while it ran); "
                "it is not repeated: a person must check",
                error_type="side_effect_in_doubt",
                task_id=envelope.task_id,
            )
        try:
            result = await run(args, context)
        except ToolFailure:
            await self.effects.release(envelope.task_id, context.idempotency_key)  # it declared it did nothing
            raise
        await self.effects.record(envelope.task_id, context.idempotency_key, result)
        if self.on_effect_recorded is not None:
            self.on_effect_recorded(spec.name)
        return result

    def _correct(self, tally: _Tally, last: str) -> None:
        tally.corrections += 1
        limit = self.agent.limits.max_tool_corrections
        if tally.corrections > limit:
            raise TaskHalted(
                f"agent {self.agent.name!r} needed more than {limit} corrections; last: {last}",
                error_type="too_many_corrections",
            )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
