"""The step runner with real model providers: corrections reach the model, attempts become decisions.

The model is the fake HTTP server speaking the OpenAI chat-completions shape;
the provider is the ``ModelChain`` that ``build_provider`` builds. Tests marked
xfail need the runner changes described in their reason.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from pydantic import SecretStr
from tests.fixtures.model_server import FakeModelServer, Received, answer, status, text, tool_call

from handrail.contracts import AgentSpec
from handrail.errors import StepFailed, TaskHalted
from handrail.hashing import GENESIS, context_hash
from handrail.llm.factory import build_provider
from handrail.llm.models import ModelCatalogue, ModelSpec, RetryDefaults
from handrail.messages import HandoffEnvelope
from handrail.prompts import PromptLibrary, PromptStore
from handrail.tools import ToolCallError, ToolSpec, default_registry, observation_data
from handrail_worker.guard import Ticket
from handrail_worker.runner import StepRunner

PROJECT_CONFIG = Path(__file__).resolve().parents[3] / "config"
NEEDS_REPLY_CORRECTIONS = (
    "needs the runner to send llm.corrections.reply_correction(reply) (and the model's own text) "
    "instead of its generic 'Reply with a tool call or a final JSON answer.'"
)
NEEDS_ARGUMENT_CORRECTIONS = "needs the runner to reject calls with ToolCall.arguments_error via arguments_correction()"
NEEDS_ATTEMPT_DECISIONS = "needs the runner to record one Decision per ModelReply.attempts entry (retries included)"
NEEDS_PROMPTS = "needs StepRunner(prompts=PromptStore) rendering the active prompt version as the system message"


class OpenGuard:
    """Grants every call; records what it settled."""

    def __init__(self) -> None:
        self.settled: list[tuple[str, str, str | None]] = []

    async def start(self) -> None:
        return None

    async def before_model_call(self, index: int, model: str, prompt_tokens: int, prompt: str | None = None) -> Ticket:
        return Ticket(f"r{index}", "model_call", model, None, time.perf_counter())

    async def before_tool_call(
        self, index: int, spec: ToolSpec, args_hash: str, *, retry: bool = False
    ) -> Ticket | ToolCallError:
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
        self.settled.append((ticket.name, outcome, error_type))


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def agent(corrections: int = 2) -> AgentSpec:
    return AgentSpec.model_validate(
        {
            "name": "expense-intake",
            "owner": "o",
            "purpose": "Gathers the facts of an expense claim.",
            "model_chain": ["gpt-test"],
            "prompt": "expense-intake@1",
            "tools": ["lookup_employee"],
            "limits": {"max_turns": 4, "max_tool_corrections": corrections},
        }
    )


def runner(server: FakeModelServer, client: httpx.AsyncClient, spec: AgentSpec, **extra: Any) -> StepRunner:
    model = ModelSpec.model_validate(
        {"name": "gpt-test", "provider": "openai", "base_url": f"{server.url}/v1", "api_key_env": "K", "timeout_s": 1}
    )
    catalogue = ModelCatalogue(
        models={"gpt-test": model}, retry=RetryDefaults(base_delay_s=0.01, max_delay_s=0.01), source="test"
    )
    provider = build_provider(spec, catalogue, api_keys={"K": SecretStr("k")}, http_client=client)
    return StepRunner(spec, provider, default_registry(), **extra)


def envelope(task_input: dict[str, Any] | None = None) -> HandoffEnvelope:
    context = {"input": task_input or {"employee_id": "E100"}, "steps": {}}
    return HandoffEnvelope(
        message_id=f"m-{uuid.uuid4().hex[:8]}",
        task_id="t",
        workflow="expense-approval",
        step="intake",
        step_index=0,
        sender="router",
        receiver="expense-intake",
        goal="Decide on the claim of E100",
        context=context,
        context_hash=context_hash(context),
        parent_hash=GENESIS,
        idempotency_key="k",
    )


def tool_results(request: Received) -> list[dict[str, Any]]:
    """The data of the tool messages the model was sent (each one an untrusted-data envelope)."""
    return [observation_data(m["content"]) for m in request.body["messages"] if m["role"] == "tool"]


def last_user(request: Received) -> str:
    return next(m["content"] for m in reversed(request.body["messages"]) if m["role"] == "user")


LOOKUP_E100 = tool_call("lookup_employee", {"employee_id": "E100"})


async def test_a_task_step_completes_over_http(model_server: FakeModelServer, http_client: httpx.AsyncClient) -> None:
    model_server.script("gpt-test", LOOKUP_E100, answer({"employee": {"employee_id": "E100"}, "confidence": 0.9}))
    outcome = await runner(model_server, http_client, agent()).run(envelope(), OpenGuard())
    assert outcome.output["employee"] == {"employee_id": "E100"} and outcome.confidence == 0.9
    second = model_server.requests()[1]
    assert tool_results(second)[0]["name"] == "Ada Park"  # the real tool's result reached the model
    assert outcome.usage.input_tokens == 200 and outcome.usage.cost_usd == 0.0


async def test_an_invented_tool_reaches_the_model_as_a_structured_error(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    model_server.script("gpt-test", tool_call("wire_money", {"to": "me"}), LOOKUP_E100, answer({"ok": True}))
    outcome = await runner(model_server, http_client, agent()).run(envelope(), OpenGuard())
    assert outcome.output == {"ok": True}
    error = tool_results(model_server.requests()[1])[0]["error"]
    assert error["code"] == "unknown_tool" and error["allowed_tools"] == ["lookup_employee"]


async def test_invalid_json_arguments_reach_the_model_as_invalid_arguments(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    model_server.script("gpt-test", tool_call("lookup_employee", '{"employee_id": "E1'), LOOKUP_E100, answer({}))
    await runner(model_server, http_client, agent()).run(envelope(), OpenGuard())
    second = model_server.requests()[1]
    assert tool_results(second)[0]["error"]["code"] == "invalid_arguments"
    # The model's own broken arguments are in the history it is shown.
    assert second.body["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"employee_id": "E1'


async def test_invalid_json_arguments_are_explained(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    model_server.script("gpt-test", tool_call("lookup_employee", '{"employee_id": "E1'), LOOKUP_E100, answer({}))
    await runner(model_server, http_client, agent()).run(envelope(), OpenGuard())
    assert "not valid JSON" in tool_results(model_server.requests()[1])[0]["error"]["message"]


@pytest.mark.parametrize("bad", [text(""), text("Looks fine to me."), text('{"employee": {"na', finish="length")])
async def test_an_unusable_answer_gets_a_correction_and_the_step_goes_on(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, bad: Any
) -> None:
    model_server.script("gpt-test", bad, answer({"ok": True}))
    outcome = await runner(model_server, http_client, agent()).run(envelope(), OpenGuard())
    assert outcome.output == {"ok": True}
    first, second = model_server.requests()
    assert len(second.body["messages"]) > len(first.body["messages"])
    assert second.body["messages"][-1]["role"] == "user"  # a correction, not a crash


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (text(""), "empty_reply"),
        (text("Looks fine to me."), "answer_not_json"),
        (text('{"employee": {"na', finish="length"), "answer_truncated"),
    ],
)
async def test_an_unusable_answer_gets_a_structured_correction(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, bad: Any, code: str
) -> None:
    model_server.script("gpt-test", bad, answer({"ok": True}))
    await runner(model_server, http_client, agent()).run(envelope(), OpenGuard())
    second = model_server.requests()[1]
    assert json.loads(last_user(second))["error"]["code"] == code
    if bad.text:  # the model is shown what it wrote
        assert second.body["messages"][-2] == {"role": "assistant", "content": bad.text}


async def test_corrections_are_bounded(model_server: FakeModelServer, http_client: httpx.AsyncClient) -> None:
    model_server.script("gpt-test", text(""), tool_call("wire_money", {}), text("no"))
    # The runner stops the step (StepFailed) or, with the guard's limits, the task (TaskHalted).
    with pytest.raises((StepFailed, TaskHalted), match="more than 1 corrections"):
        await runner(model_server, http_client, agent(corrections=1)).run(envelope(), OpenGuard())
    assert len(model_server.requests()) == 2


async def test_a_retried_call_still_completes_the_step(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    model_server.script("gpt-test", status(500), status(429, retry_after="0"), answer({"ok": True}))
    outcome = await runner(model_server, http_client, agent()).run(envelope(), OpenGuard())
    assert outcome.output == {"ok": True} and len(model_server.requests()) == 3


async def test_every_attempt_is_a_decision_and_goes_through_the_guard(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    guard = OpenGuard()
    model_server.script("gpt-test", status(500), answer({"ok": True}))
    outcome = await runner(model_server, http_client, agent()).run(envelope(), guard)
    calls = [(d.outcome, d.error) for d in outcome.decisions if d.kind == "model_call"]
    assert calls == [("error", "retry: server_error"), ("ok", None)]
    assert guard.settled == [("gpt-test", "error", "server_error"), ("gpt-test", "ok", None)]
    assert outcome.usage.model_calls == 2


@pytest_asyncio.fixture
async def prompt_store(redis_url: str, tmp_path: Path) -> AsyncIterator[PromptStore]:
    shutil.copytree(PROJECT_CONFIG / "prompts", tmp_path / "prompts")
    redis = aioredis.Redis.from_url(redis_url)
    yield PromptStore(PromptLibrary(tmp_path / "prompts"), redis, f"test-{uuid.uuid4().hex[:8]}:")
    await redis.aclose()


async def test_the_active_prompt_version_reaches_the_model_on_the_next_step(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, prompt_store: PromptStore
) -> None:
    steps = runner(model_server, http_client, agent(), prompts=prompt_store)

    def system() -> str:
        return model_server.requests()[-1].body["messages"][0]["content"]

    await steps.run(envelope(), OpenGuard())
    assert "an agent of the finance platform" in system() and "expense-intake" in system()  # declared: 1
    await prompt_store.activate("expense-intake", "2", declared="1")
    await steps.run(envelope(), OpenGuard())
    assert "Do this in order" in system()  # 2, without a new runner
    await prompt_store.rollback("expense-intake")
    await steps.run(envelope(), OpenGuard())
    assert "an agent of the finance platform" in system()
