"""The model chain against a real local HTTP server: retries, budget hooks, failover, breakers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tests.fixtures.model_server import FakeModelServer, answer, hang, status
from tests.libs.llm.support import provider_for, spec_for

from handrail.errors import TaskHalted
from handrail.llm import ChatMessage, ModelRequest
from handrail.llm.breaker import BreakerState, InMemoryBreakerBoard
from handrail.llm.chain import ChainLink, ModelChain
from handrail.llm.errors import ModelChainExhausted, ModelEscalation
from handrail.llm.observers import observing
from handrail.llm.retry import RetryPolicy

#: Tiny back-offs: the tests assert the waits' lower bounds only where the server asked for one.
FAST = {"base_delay_s": 0.01, "max_delay_s": 0.02, "max_total_s": 10.0, "max_retry_after_s": 5.0}
REQUEST = ModelRequest(model="ignored", messages=[ChatMessage("user", "{}")])


@dataclass
class Ledger:
    """A budget-like observer: reserves before each attempt, settles after, and can refuse."""

    refuse_after: int | None = None
    reserved: list[str] = field(default_factory=list)
    settled: list[tuple[str, str, str | None, int, float]] = field(default_factory=list)

    async def before_attempt(self, model: str) -> None:
        if self.refuse_after is not None and len(self.reserved) >= self.refuse_after:
            raise TaskHalted("budget exhausted", error_type="budget_exhausted")
        self.reserved.append(model)

    async def after_attempt(
        self,
        model: str,
        provider: str,
        outcome: Any,
        error_type: str | None,
        latency_ms: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        assert latency_ms >= 0
        self.settled.append((model, outcome, error_type, input_tokens + output_tokens, cost_usd))


def chain(
    server: FakeModelServer,
    client: httpx.AsyncClient,
    models: list[str],
    *,
    attempts: int = 3,
    breakers: InMemoryBreakerBoard | None = None,
    **options: Any,
) -> ModelChain:
    retry = RetryPolicy(max_attempts=attempts, **FAST)
    links = [ChainLink(name, provider_for(spec_for(server, "openai", name), client), retry) for name in models]
    return ModelChain(links, breakers=breakers or InMemoryBreakerBoard(failure_threshold=100), **options)


async def test_retries_go_through_the_budget_hook_and_end_in_an_answer(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    ledger = Ledger()
    model_server.script("m1", status(500), hang(), answer({"ok": 1}))
    reply = await chain(model_server, http_client, ["m1"], observers=[ledger]).complete(REQUEST)

    assert reply.answer == {"ok": 1} and reply.model == "m1"
    assert len(model_server.requests("m1")) == 3  # counted at the server
    assert ledger.reserved == ["m1", "m1", "m1"]  # each attempt reserved...
    assert [(s[1], s[2]) for s in ledger.settled] == [("retry", "server_error"), ("retry", "timeout"), ("ok", None)]
    assert ledger.settled[-1][3] == 120 and ledger.settled[-1][4] > 0  # ...and settled with what it used
    assert [a.outcome for a in reply.attempts] == ["retry", "retry", "ok"]


async def test_retry_after_is_waited_for(model_server: FakeModelServer, http_client: httpx.AsyncClient) -> None:
    model_server.script("m1", status(429, retry_after="1"), answer({"ok": 1}))
    started = time.monotonic()
    reply = await chain(model_server, http_client, ["m1"]).complete(REQUEST)
    assert reply.answer == {"ok": 1}
    assert time.monotonic() - started >= 1.0
    assert [a.error_type for a in reply.attempts] == ["rate_limited", None]


async def test_a_model_that_keeps_failing_hands_over_to_the_next(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    ledger = Ledger()
    model_server.script("m1", status(500), status(502))
    model_server.script("m2", answer({"served_by": "m2"}))
    reply = await chain(model_server, http_client, ["m1", "m2"], attempts=2, observers=[ledger]).complete(REQUEST)

    assert reply.answer == {"served_by": "m2"} and reply.model == "m2"
    assert len(model_server.requests("m1")) == 2 and len(model_server.requests("m2")) == 1
    assert [(s[0], s[1]) for s in ledger.settled] == [("m1", "retry"), ("m1", "error"), ("m2", "ok")]


async def test_a_non_retryable_error_fails_over_at_once(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    model_server.script("m1", status(401))
    reply = await chain(model_server, http_client, ["m1", "m2"]).complete(REQUEST)
    assert reply.model == "m2" and len(model_server.requests("m1")) == 1
    assert [(a.model, a.outcome, a.error_type) for a in reply.attempts] == [
        ("m1", "error", "request_rejected"),
        ("m2", "ok", None),
    ]


async def test_the_breaker_opens_short_circuits_and_probes_after_the_cool_down(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    now = [0.0]
    breakers = InMemoryBreakerBoard(failure_threshold=2, open_s=30.0, clock=lambda: now[0])
    models = chain(model_server, http_client, ["m1", "m2"], attempts=5, breakers=breakers)
    model_server.script("m1", status(500), status(500), status(500))

    first = await models.complete(REQUEST)
    # The breaker opened after two failures and cut the retries short: the third 500 was never asked for.
    assert len(model_server.requests("m1")) == 2 and first.model == "m2"
    assert await breakers.state("m1") == BreakerState.OPEN

    second = await models.complete(REQUEST)
    assert len(model_server.requests("m1")) == 2  # short-circuited: m1 not called at all
    assert second.model == "m2" and [a.model for a in second.attempts] == ["m2"]

    now[0] += 31.0  # past open_s: one probe goes to m1; it fails and the breaker opens again
    third = await models.complete(REQUEST)
    assert len(model_server.requests("m1")) == 3 and third.model == "m2"
    assert await breakers.state("m1") == BreakerState.OPEN

    now[0] += 31.0  # the next probe succeeds and closes it
    fourth = await models.complete(REQUEST)
    assert fourth.model == "m1" and await breakers.state("m1") == BreakerState.CLOSED


async def test_a_high_stakes_agent_escalates_instead_of_falling_back(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    model_server.script("m1", status(500), status(500))
    models = chain(model_server, http_client, ["m1", "m2"], attempts=2, escalate_instead_of_fallback=True)
    with pytest.raises(ModelEscalation, match="escalates to a person instead of falling back to 'm2'") as caught:
        await models.complete(REQUEST)
    assert caught.value.error_type == "model_escalation"
    assert model_server.requests("m2") == []


async def test_when_every_model_fails_the_chain_is_exhausted(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    model_server.script("m1", status(500))
    model_server.script("m2", status(400))
    with pytest.raises(ModelChainExhausted) as caught:
        await chain(model_server, http_client, ["m1", "m2"], attempts=1).complete(REQUEST)
    assert caught.value.error_type == "model_unavailable"
    assert "m1: server_error" in caught.value.reason and "m2: request_rejected" in caught.value.reason


async def test_a_refused_reservation_stops_the_call_before_it_goes_out(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    ledger = Ledger(refuse_after=1)
    tracer = Ledger()
    model_server.script("m1", status(500))
    models = chain(model_server, http_client, ["m1"], observers=[tracer, ledger])
    with pytest.raises(TaskHalted, match="budget exhausted"):
        await models.complete(REQUEST)
    assert len(model_server.requests("m1")) == 1  # the retry was never sent
    # The observer that had begun the refused attempt is closed, so no span or reservation dangles.
    assert [(s[1], s[2]) for s in tracer.settled] == [("retry", "server_error"), ("error", "stopped:TaskHalted")]
    assert len(ledger.settled) == 1


async def test_observers_bound_per_call_see_only_their_calls(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    models = chain(model_server, http_client, ["m1"])
    step_a, step_b = Ledger(), Ledger()
    with observing(step_a):
        await models.complete(REQUEST)
    with observing(step_b):
        await models.complete(REQUEST)
        await models.complete(REQUEST)
    assert (len(step_a.settled), len(step_b.settled)) == (1, 2)
