"""Both providers against a real local HTTP server: mapping, usage and cost, every failure shape."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from tests.fixtures.model_server import FakeModelServer, answer, hang, status, text, tool_call
from tests.libs.llm.support import TEST_KEY, TIMEOUT_S, provider_for, spec_for

from handrail.llm import ChatMessage, ModelRequest, ToolCall
from handrail.llm.errors import (
    ModelConnectionError,
    ModelError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelServerError,
    ModelTimeout,
)
from handrail.tools import ToolSpec

SHAPES = ["openai", "anthropic"]
LOOKUP = ToolSpec(
    name="lookup_employee",
    description="Find an employee by id.",
    args_schema={"type": "object", "required": ["employee_id"], "properties": {"employee_id": {"type": "string"}}},
)


def request(*extra: ChatMessage) -> ModelRequest:
    return ModelRequest(
        model="m1",
        messages=[ChatMessage("system", "You are a test."), ChatMessage("user", '{"task": 1}'), *extra],
        tools=[LOOKUP],
    )


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_tool_call_comes_back_parsed_with_usage_and_cost(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, shape: str
) -> None:
    provider = provider_for(spec_for(model_server, shape, api_model="vendor-model-7"), http_client)
    model_server.script("vendor-model-7", tool_call("lookup_employee", {"employee_id": "E100"}))

    reply = await provider.complete(request())

    assert reply.provider == shape and reply.model == "m1"
    assert len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call.name == "lookup_employee" and call.arguments == {"employee_id": "E100"}
    assert call.arguments_error is None and call.id
    assert reply.answer is None and reply.finish_reason == "tool_calls"
    # Usage is what the server reported (100 in, 20 out); cost is the price table's: $2 and $10 per 1M.
    assert (reply.input_tokens, reply.output_tokens) == (100, 20)
    assert reply.cost_usd == pytest.approx((100 * 2.0 + 20 * 10.0) / 1_000_000)


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_final_json_answer_is_parsed_and_its_confidence_read(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, shape: str
) -> None:
    provider = provider_for(spec_for(model_server, shape), http_client)
    model_server.script("m1", answer({"decision": "approved", "confidence": 0.9}))
    reply = await provider.complete(request())
    assert reply.answer == {"decision": "approved", "confidence": 0.9}
    assert reply.confidence == 0.9 and reply.answer_error is None and reply.finish_reason == "stop"


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_fenced_json_answer_is_accepted(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, shape: str
) -> None:
    provider = provider_for(spec_for(model_server, shape), http_client)
    model_server.script("m1", text('```json\n{"ok": true}\n```'))
    assert (await provider.complete(request())).answer == {"ok": True}


@pytest.mark.parametrize("shape", SHAPES)
async def test_invalid_json_arguments_keep_the_raw_string_and_say_why(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, shape: str
) -> None:
    provider = provider_for(spec_for(model_server, shape), http_client)
    model_server.script("m1", tool_call("lookup_employee", '{"employee_id": "E1'))
    call = (await provider.complete(request())).tool_calls[0]
    assert call.arguments == '{"employee_id": "E1'
    assert call.arguments_error is not None and "not valid JSON" in call.arguments_error


@pytest.mark.parametrize("shape", SHAPES)
async def test_an_invented_tool_name_is_passed_on_for_the_registry_to_reject(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, shape: str
) -> None:
    provider = provider_for(spec_for(model_server, shape), http_client)
    model_server.script("m1", tool_call("wire_money", {"to": "me"}))
    call = (await provider.complete(request())).tool_calls[0]
    assert (call.name, call.arguments) == ("wire_money", {"to": "me"})


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("reply", "fragment", "truncated"),
    [
        (text(""), "empty", False),
        (text("Sure! The claim looks fine."), "not valid JSON", False),
        (text("[1, 2]"), "not an object", False),
        # Cut off at the output limit: refused even though the text happens to parse.
        (text('{"decision": "approved"}', finish="length"), "cut off", True),
    ],
)
async def test_an_unusable_answer_is_no_answer_and_says_why(
    model_server: FakeModelServer,
    http_client: httpx.AsyncClient,
    shape: str,
    reply: object,
    fragment: str,
    truncated: bool,
) -> None:
    provider = provider_for(spec_for(model_server, shape), http_client)
    model_server.script("m1", reply)  # type: ignore[arg-type]
    result = await provider.complete(request())
    assert result.answer is None and not result.tool_calls
    assert result.answer_error is not None and fragment in result.answer_error
    assert result.truncated is truncated


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("reply", "error_type", "retryable"),
    [
        (status(429, retry_after="7"), ModelRateLimited, True),
        (status(500), ModelServerError, True),
        (status(503), ModelServerError, True),
        (status(401), ModelRequestRejected, False),
        (status(400), ModelRequestRejected, False),
    ],
)
async def test_http_failures_become_model_errors_that_know_their_retryability(
    model_server: FakeModelServer,
    http_client: httpx.AsyncClient,
    shape: str,
    reply: object,
    error_type: type[ModelError],
    retryable: bool,
) -> None:
    provider = provider_for(spec_for(model_server, shape), http_client)
    model_server.script("m1", reply)  # type: ignore[arg-type]
    with pytest.raises(error_type) as caught:
        await provider.complete(request())
    assert caught.value.retryable is retryable
    assert TEST_KEY not in str(caught.value)
    if isinstance(caught.value, ModelRateLimited):
        assert caught.value.retry_after_s == 7.0


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_hung_server_is_a_timeout_within_timeout_s(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, shape: str
) -> None:
    provider = provider_for(spec_for(model_server, shape), http_client)
    model_server.script("m1", hang())
    started = time.monotonic()
    with pytest.raises(ModelTimeout) as caught:
        await provider.complete(request())
    assert caught.value.retryable
    assert time.monotonic() - started < TIMEOUT_S + 0.5


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_refused_connection_is_a_retryable_connection_error(http_client: httpx.AsyncClient, shape: str) -> None:
    closed = FakeModelServer().start()
    closed.stop()  # nothing listens on its port any more
    provider = provider_for(spec_for(closed, shape), http_client)
    with pytest.raises(ModelConnectionError) as caught:
        await provider.complete(request())
    assert caught.value.retryable


async def test_openai_request_carries_the_conversation_tools_and_key(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    provider = provider_for(spec_for(model_server, "openai", max_output_tokens=321), http_client)
    history = (
        ChatMessage("assistant", tool_calls=(ToolCall("c1", "lookup_employee", '{"bad'),)),
        ChatMessage("tool", '{"error": {"code": "invalid_arguments"}}', tool_call_id="c1", name="lookup_employee"),
    )
    await provider.complete(request(*history))
    sent = model_server.requests()[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    body = sent.body
    assert body["max_tokens"] == 321
    function = {"name": "lookup_employee", "description": LOOKUP.description, "parameters": LOOKUP.args_schema}
    assert body["tools"] == [{"type": "function", "function": function}]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    # The model's own invalid arguments go back verbatim, so it can see what it got wrong.
    assert body["messages"][2]["tool_calls"][0]["function"] == {"name": "lookup_employee", "arguments": '{"bad'}
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": history[1].content}


async def test_anthropic_request_has_system_apart_tool_blocks_and_merged_turns(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    provider = provider_for(spec_for(model_server, "anthropic"), http_client)
    history = (
        ChatMessage("assistant", tool_calls=(ToolCall("t1", "lookup_employee", {"employee_id": "E1"}),)),
        ChatMessage("tool", '{"name": "Ada"}', tool_call_id="t1", name="lookup_employee"),
        ChatMessage("user", "Now answer."),
    )
    await provider.complete(request(*history))
    sent = model_server.requests()[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == TEST_KEY and sent.headers["anthropic-version"] == "2023-06-01"
    body = sent.body
    assert body["system"] == "You are a test."
    assert body["tools"] == [
        {"name": "lookup_employee", "description": LOOKUP.description, "input_schema": LOOKUP.args_schema}
    ]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "lookup_employee", "input": {"employee_id": "E1"}}
    ]
    # The tool result and the follow-up text share one user turn, tool result first.
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": '{"name": "Ada"}'},
        {"type": "text", "text": "Now answer."},
    ]


async def test_the_key_never_shows_in_reprs_errors_or_logs(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = provider_for(spec_for(model_server, "openai"), http_client)
    model_server.script("m1", status(401))
    with pytest.raises(ModelRequestRejected) as caught:
        await provider.complete(request())
    assert TEST_KEY not in repr(provider) and TEST_KEY not in str(caught.value)
    assert TEST_KEY not in caplog.text
    assert TEST_KEY not in json.dumps(provider.spec.model_dump())
