"""Anthropic Messages: ``POST {base_url}/v1/messages``.

System messages become the ``system`` field; tool calls are ``tool_use``
blocks and their results ``tool_result`` blocks in the next user turn;
consecutive messages of one role are merged, as the API wants turns to
alternate. ``stop_reason: max_tokens`` marks a truncated reply.
"""

from __future__ import annotations

from typing import Any

from handrail.llm.base import ChatMessage, ModelReply, ModelRequest, ToolCall
from handrail.llm.errors import ModelResponseInvalid
from handrail.llm.parsing import confidence_of, normalise_finish_reason, parse_answer, parse_arguments
from handrail.llm.transport import HttpProvider, post_json
from handrail.tools.registry import ToolSpec

#: The Messages API version this mapping is written against.
ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(HttpProvider):
    """A model behind the Anthropic Messages API."""

    name = "anthropic"
    path = "/v1/messages"

    async def complete(self, request: ModelRequest) -> ModelReply:
        """One Messages call for ``request``."""
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self._api_key is not None:
            headers["x-api-key"] = self._api_key.get_secret_value()
        payload = await post_json(self._client, self.spec, self.name, self._url, self._body(request), headers)
        try:
            return self._reply(payload)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelResponseInvalid(
                f"not a Messages response ({type(exc).__name__}: {exc})", model=self.spec.name, provider=self.name
            ) from None

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system" and m.content)
        body: dict[str, Any] = {
            "model": self.spec.api_model_id,
            "max_tokens": self.spec.max_output_tokens,
            "messages": _turns(m for m in request.messages if m.role != "system"),
        }
        if system:
            body["system"] = system
        if request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
        if self.spec.temperature is not None:
            body["temperature"] = self.spec.temperature
        return body

    def _reply(self, payload: dict[str, Any]) -> ModelReply:
        blocks = payload["content"]
        finish_reason = normalise_finish_reason(payload.get("stop_reason"))
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        usage = payload.get("usage") or {}
        # Cache reads and writes are input too; the price table has one input rate.
        input_tokens = sum(
            int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        output_tokens = int(usage.get("output_tokens") or 0)
        common: dict[str, Any] = {
            "provider": self.name,
            "model": self.spec.name,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": self.spec.price.cost_usd(input_tokens, output_tokens),
            "finish_reason": finish_reason,
            "raw_text": text or None,
        }
        calls = tuple(_tool_call(b) for b in blocks if b.get("type") == "tool_use")
        if calls:
            return ModelReply(tool_calls=calls, **common)
        answer, answer_error = parse_answer(text, finish_reason)
        return ModelReply(answer=answer, answer_error=answer_error, confidence=confidence_of(answer), **common)


def _turns(messages: Any) -> list[dict[str, Any]]:
    """User and assistant turns with content blocks, consecutive same-role messages merged."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, blocks = _blocks(message)
        if not blocks:
            continue  # the API refuses empty turns
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _blocks(message: ChatMessage) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        return "user", [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
    for call in message.tool_calls:
        # ``input`` must be an object; arguments that never parsed go back wrapped, so the model sees them.
        arguments = call.arguments if isinstance(call.arguments, dict) else {"_unparsed_arguments": call.arguments}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return message.role, blocks


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {"name": spec.name, "description": spec.description, "input_schema": spec.args_schema}


def _tool_call(block: dict[str, Any]) -> ToolCall:
    arguments, error = parse_arguments(block.get("input"))
    return ToolCall(id=str(block.get("id") or ""), name=str(block["name"]), arguments=arguments, arguments_error=error)
