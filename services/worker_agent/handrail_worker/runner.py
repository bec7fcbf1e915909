"""One bounded step: model call -> tool calls -> observations ... -> an answer.

Every model-proposed tool call is checked against the registry and the agent's
allowed tools before it runs; a rejected call becomes a structured error the
model sees, and too many of them fail the step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from handrail.contracts import AgentSpec
from handrail.errors import StepFailed
from handrail.hashing import canonical_json, sha256_hex
from handrail.llm import ChatMessage, ModelProvider, ModelRequest
from handrail.messages import Decision, HandoffEnvelope, Usage
from handrail.tools import ToolCallError, ToolFailure, ToolRegistry


@dataclass
class StepOutcome:
    """What a step produced and what it cost."""

    output: dict[str, Any]
    confidence: float | None
    decisions: list[Decision] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


class StepRunner:
    """Runs steps for one agent with its model provider and tools."""

    def __init__(self, agent: AgentSpec, provider: ModelProvider, tools: ToolRegistry) -> None:
        self.agent = agent
        self.provider = provider
        self.tools = tools

    async def run(self, envelope: HandoffEnvelope) -> StepOutcome:
        """Run the step ``envelope`` hands over; raise ``StepFailed`` if it ends without an answer."""
        agent = self.agent
        messages = [
            ChatMessage("system", f"You are {agent.name}. {agent.purpose} (prompt {agent.prompt})"),
            ChatMessage(
                "user", json.dumps({"goal": envelope.goal, "step": envelope.step, "context": envelope.context})
            ),
        ]
        specs = self.tools.specs(agent.tools)
        decisions: list[Decision] = []
        usage = {"model_calls": 0, "tool_calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        corrections = 0
        model = agent.model_chain[0]
        for _ in range(agent.limits.max_turns):
            started = time.perf_counter()
            reply = await self.provider.complete(ModelRequest(model=model, messages=messages, tools=specs))
            usage["model_calls"] += 1
            usage["input_tokens"] += reply.input_tokens
            usage["output_tokens"] += reply.output_tokens
            usage["cost_usd"] += reply.cost_usd
            decisions.append(
                Decision(
                    kind="model_call",
                    name=f"{reply.provider}/{reply.model}",
                    outcome="ok",
                    latency_ms=_ms_since(started),
                    input_tokens=reply.input_tokens,
                    output_tokens=reply.output_tokens,
                )
            )
            if reply.answer is not None:
                return StepOutcome(reply.answer, reply.confidence, decisions, Usage(**usage))
            if not reply.tool_calls:
                corrections += 1
                self._check_corrections(corrections, "the model answered with neither a tool call nor an answer")
                messages.append(ChatMessage("user", "Reply with a tool call or a final JSON answer."))
                continue
            messages.append(ChatMessage("assistant", tool_calls=reply.tool_calls))
            for call in reply.tool_calls:
                observation, decision = await self._call_tool(call.name, call.arguments)
                decisions.append(decision)
                if decision.outcome == "rejected":
                    corrections += 1
                    self._check_corrections(corrections, decision.error or "rejected tool call")
                else:
                    usage["tool_calls"] += 1
                messages.append(ChatMessage("tool", json.dumps(observation), tool_call_id=call.id, name=call.name))
        raise StepFailed(f"agent {agent.name!r} gave no answer within {agent.limits.max_turns} model calls")

    async def _call_tool(self, name: str, args: Any) -> tuple[dict[str, Any], Decision]:
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
        assert tool is not None  # check_call vouched for it
        try:
            result = await tool.run(args)
        except ToolFailure as exc:
            failure = ToolCallError("tool_failed", name, str(exc))
            return failure.as_observation(), Decision(
                kind="tool_call",
                name=name,
                outcome="error",
                args_hash=args_hash,
                error=f"tool_failed: {exc}",
                latency_ms=_ms_since(started),
            )
        return result, Decision(
            kind="tool_call", name=name, outcome="ok", args_hash=args_hash, latency_ms=_ms_since(started)
        )

    def _check_corrections(self, corrections: int, last: str) -> None:
        limit = self.agent.limits.max_tool_corrections
        if corrections > limit:
            raise StepFailed(f"agent {self.agent.name!r} needed more than {limit} corrections; last: {last}")


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
