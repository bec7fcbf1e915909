"""Reading what a model wrote: tool arguments, the final answer, and why it stopped.

Nothing here raises on bad model output. Invalid arguments stay the raw string
with an error beside them; an answer that is empty, not JSON, not an object or
cut off at the output limit becomes ``None`` with the reason. The runner turns
those reasons into corrections the model can act on.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: A JSON answer wrapped in a Markdown code fence, as chat models often write it.
_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n(.*)\n```$", re.DOTALL)

_FINISH_REASONS = {
    # OpenAI-compatible
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
    # Anthropic Messages
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}


def normalise_finish_reason(reason: object) -> str | None:
    """``stop`` | ``tool_calls`` | ``length`` | ``content_filter``, or the provider's own word."""
    if not isinstance(reason, str) or not reason:
        return None
    return _FINISH_REASONS.get(reason, reason)


def parse_arguments(raw: object) -> tuple[Any, str | None]:
    """Tool arguments as the model sent them: parsed JSON, or the raw string and why it did not parse."""
    if not isinstance(raw, str):
        return raw, None  # already structured (Anthropic's ``input``)
    if not raw.strip():
        return {}, None  # some servers send "" for a call without arguments
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as exc:
        return raw, f"the arguments are not valid JSON: {exc.msg} at position {exc.pos}"


def parse_answer(text: str, finish_reason: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The final answer as a JSON object, or None and the reason the text is not one."""
    if finish_reason == "length":
        return None, "the answer was cut off at the output limit; give a shorter, complete JSON object"
    if finish_reason == "content_filter":
        return None, "the answer was withheld by the provider's content filter"
    body = text.strip()
    if not body:
        return None, "the reply was empty; answer with a tool call or a final JSON object"
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"the answer is not valid JSON ({exc.msg} at position {exc.pos}); reply with one JSON object"
    if not isinstance(value, dict):
        return None, f"the answer is JSON but a {type(value).__name__}, not an object; reply with one JSON object"
    return value, None


def confidence_of(answer: dict[str, Any] | None) -> float | None:
    """The answer's own top-level ``confidence`` when it is a number from 0 to 1."""
    if answer is None:
        return None
    value = answer.get("confidence")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= 1 else None
