"""OpenAI-compatible chat completions: OpenAI, Azure-style gateways, vLLM, Ollama, LiteLLM proxies.

``POST {base_url}/chat/completions`` with the conversation, the tools as
JSON-Schema function specs, and the output-token limit. The reply's tool calls
keep their arguments as parsed JSON (or the raw string and why it did not
parse); its text becomes the answer when it is a JSON object. Usage is what the
server reports; cost comes from the catalogue's price table.
"""

from __future__ import annotations

import json
from typing import Any

from handrail.llm.base import ChatMessage, ModelReply, ModelRequest, ToolCall
from handrail.llm.errors import ModelResponseInvalid
from handrail.llm.parsing import confidence_of, normalise_finish_reason, parse_answer, parse_arguments
from handrail.llm.transport import HttpProvider, auth_headers, post_json
from handrail.tools.registry import ToolSpec


class OpenAICompatProvider(HttpProvider):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"
    path = "/chat/completions"

    async def complete(self, request: ModelRequest) -> ModelReply:
        """One chat completion for ``request``."""
        payload = await post_json(
            self._client, self.spec, self.name, self._url, self._body(request), auth_headers(self.spec, self._api_key)
        )
        try:
            return self._reply(payload)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelResponseInvalid(
                f"not a chat completion ({type(exc).__name__}: {exc})", model=self.spec.name, provider=self.name
            ) from None

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.api_model_id,
            "messages": [_message(m) for m in request.messages],
            "max_tokens": self.spec.max_output_tokens,
        }
        if request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
        if self.spec.temperature is not None:
            body["temperature"] = self.spec.temperature
        return body

    def _reply(self, payload: dict[str, Any]) -> ModelReply:
        choice = payload["choices"][0]
        message = choice["message"]
        finish_reason = normalise_finish_reason(choice.get("finish_reason"))
        text = _text(message.get("content"))
        usage = payload.get("usage") or {}
        input_tokens = int(usage.get("prompt_tokens") or 0)
        output_tokens = int(usage.get("completion_tokens") or 0)
        common: dict[str, Any] = {
            "provider": self.name,
            "model": self.spec.name,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": self.spec.price.cost_usd(input_tokens, output_tokens),
            "finish_reason": finish_reason,
            "raw_text": text or None,
        }
        calls = tuple(_tool_call(c) for c in message.get("tool_calls") or [])
        if calls:
            return ModelReply(tool_calls=calls, **common)
        answer, answer_error = parse_answer(text, finish_reason)
        return ModelReply(answer=answer, answer_error=answer_error, confidence=confidence_of(answer), **common)


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    # What the model sent goes back as it was, invalid JSON included: it sees its own mistake.
                    "function": {"name": call.name, "arguments": _arguments_text(call.arguments)},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": spec.args_schema},
    }


def _tool_call(raw: dict[str, Any]) -> ToolCall:
    function = raw["function"]
    arguments, error = parse_arguments(function.get("arguments"))
    return ToolCall(id=str(raw.get("id") or ""), name=str(function["name"]), arguments=arguments, arguments_error=error)


def _text(content: Any) -> str:
    """Message content as text: a string, or (some gateways) a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise TypeError(f"message content is a {type(content).__name__}")
