"""The model request hash a step's tape records: the same bytes as the canonical JSON of the whole request."""

from __future__ import annotations

import dataclasses
import json

from handrail.hashing import canonical_json, sha256_hex
from handrail.llm import ChatMessage, ModelRequest, ToolCall
from handrail.tools import ToolSpec
from handrail_worker.tape import request_hash

SPEC = ToolSpec(
    name="convert_currency",
    description="Convert an amount to US dollars.",
    args_schema={"type": "object", "properties": {"amount": {"type": "number", "minimum": 0.5}}},
    side_effect=True,
    cost_usd=0.0125,
)


def whole(request: ModelRequest) -> str:
    """The definition: sha256 of the canonical JSON of the request as plain JSON, all of it at once."""
    return sha256_hex(canonical_json(json.loads(json.dumps(dataclasses.asdict(request), default=str))))


def request(*messages: ChatMessage, tools: tuple[ToolSpec, ...] = (SPEC,)) -> ModelRequest:
    return ModelRequest(model="gpt-4o-mini", messages=list(messages), tools=list(tools))


def test_the_hash_is_that_of_the_whole_request_in_canonical_json() -> None:
    calls = (
        ToolCall("c1", "convert_currency", {"amount": 12.5, "currency": "EUR", "ünïcode": ["a", 1, None, True]}),
        ToolCall("c2", "convert_currency", "{not json", arguments_error="Expecting property name"),
    )
    asked = request(
        ChatMessage("system", "You are ${agent}."),
        ChatMessage("user", json.dumps({"input": {"amount": 1e-7, "big": 2**53 - 1}})),
        ChatMessage("assistant", "", tool_calls=calls),
        ChatMessage("tool", '{"amount_usd": 13.5}', tool_call_id="c1", name="convert_currency"),
    )
    assert request_hash(asked) == whole(asked)
    bare = request(ChatMessage("user", "hi"), tools=())
    assert request_hash(bare) == whole(bare)


def test_every_field_of_a_message_and_a_tool_counts() -> None:
    base = request(ChatMessage("user", "hi"))
    assert request_hash(base) == request_hash(request(ChatMessage("user", "hi")))
    changed = [
        request(ChatMessage("user", "hi", name="someone")),
        request(ChatMessage("user", "hi", tool_call_id="c9")),
        request(ChatMessage("assistant", "hi")),
        request(ChatMessage("user", "hi"), tools=(dataclasses.replace(SPEC, requires_approval=True),)),
        request(ChatMessage("user", "hi"), tools=(dataclasses.replace(SPEC, cost_usd=0.5),)),
        request(ChatMessage("user", "hi"), tools=(SPEC, SPEC)),
        dataclasses.replace(base, model="gpt-4o"),
    ]
    hashes = {request_hash(r) for r in changed}
    assert request_hash(base) not in hashes and len(hashes) == len(changed)
    assert all(request_hash(r) == whole(r) for r in changed)
