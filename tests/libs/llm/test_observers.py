"""Attempt observers: spans per attempt, the in-memory breaker, and a lone provider run as a chain."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from handrail.contracts.agents import ScriptedAnswer, ScriptedCall
from handrail.errors import StepFailed
from handrail.llm import ChatMessage, ModelRequest, ScriptedProvider
from handrail.llm.breaker import BreakerState, InMemoryBreakerBoard
from handrail.llm.chain import as_chain
from handrail.llm.observers import TracingObserver


async def test_each_attempt_is_a_span_with_genai_attributes_and_the_prompt_version() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = TracingObserver({"handrail.prompt": "expense-intake@2"}, tracer=provider.get_tracer("test"))

    await observer.before_attempt("gpt-x")
    await observer.after_attempt("gpt-x", "openai", "retry", "rate_limited", 3.0, 0, 0, 0.0)
    await observer.before_attempt("gpt-x")
    await observer.after_attempt("gpt-x", "openai", "ok", None, 9.0, 100, 20, 0.0012)

    failed, ok = exporter.get_finished_spans()
    assert ok.name == "chat gpt-x" and ok.attributes is not None
    assert ok.attributes["gen_ai.request.model"] == "gpt-x" and ok.attributes["gen_ai.provider.name"] == "openai"
    assert ok.attributes["gen_ai.usage.input_tokens"] == 100 and ok.attributes["gen_ai.usage.output_tokens"] == 20
    assert ok.attributes["handrail.prompt"] == "expense-intake@2" and ok.attributes["handrail.cost_usd"] == 0.0012
    assert failed.attributes is not None and failed.attributes["error.type"] == "rate_limited"
    assert not failed.status.is_ok


async def test_a_half_open_breaker_lets_one_probe_through_at_a_time() -> None:
    now = [0.0]
    board = InMemoryBreakerBoard(failure_threshold=1, open_s=5.0, clock=lambda: now[0])
    await board.record("m", False)
    assert await board.state("m") == BreakerState.OPEN and not await board.allow("m")
    now[0] = 5.0
    assert await board.allow("m")  # the probe
    assert not await board.allow("m")  # a second caller waits for the probe's outcome
    await board.record("m", True)
    assert await board.state("m") == BreakerState.CLOSED and await board.allow("m")


async def test_a_lone_scripted_provider_as_a_chain_behaves_as_itself() -> None:
    plan = [ScriptedCall(call="lookup_employee", args={"employee_id": "E1"}), ScriptedAnswer(answer={"ok": True})]
    alone, chained = ScriptedProvider(plan), as_chain(ScriptedProvider(plan), "scripted")
    request = ModelRequest(model="scripted", messages=[ChatMessage("user", "{}")])
    first, second = await alone.complete(request), await chained.complete(request)
    assert (second.provider, second.model, second.tool_calls) == (first.provider, first.model, first.tool_calls)
    assert [(a.model, a.outcome) for a in second.attempts] == [("scripted", "ok")]
    assert as_chain(chained, "scripted") is chained

    # A plan run out is the step's failure, raised as it always was, and never counted against the model.
    done = ModelRequest(model="scripted", messages=[ChatMessage("user", "{}"), *[ChatMessage("assistant")] * 2])
    with pytest.raises(StepFailed, match="2 turns"):
        await chained.complete(done)
    assert await chained.breakers.state("scripted") == BreakerState.CLOSED
