"""The provider interface: a chat request with tools in, a reply with tool calls or an answer out.

A reply keeps what a correction needs when the model's output is unusable:
``ToolCall.arguments_error`` when the arguments were not valid JSON (``arguments``
is then the raw string), and ``raw_text`` / ``answer_error`` / ``finish_reason``
when the text was empty, not a JSON object, or cut off at the output limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from handrail.tools.registry import ToolSpec


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model proposes; ``arguments`` is whatever the model sent.

    When the model sent arguments that are not valid JSON, ``arguments`` is the
    raw string and ``arguments_error`` says why it did not parse.
    """

    id: str
    name: str
    arguments: Any
    arguments_error: str | None = None


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ModelRequest:
    """What the worker asks of a model in one turn."""

    model: str
    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)


@dataclass(frozen=True)
class Attempt:
    """One attempt at a model call, as a model chain made it."""

    model: str
    provider: str
    outcome: Literal["ok", "error", "retry"]
    error_type: str | None
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class ModelReply:
    """The model's turn: tool calls to run, or a final ``answer`` (a JSON object).

    ``raw_text`` is the text the model wrote (when it wrote any), ``answer_error``
    why that text is not an answer (empty, not JSON, not an object, truncated), and
    ``finish_reason`` the normalised reason the model stopped: ``stop``,
    ``tool_calls``, ``length`` (cut off at the output limit), ``content_filter``,
    or the provider's own word. ``attempts`` lists every attempt a model chain
    made for this reply, failed ones included.
    """

    provider: str
    model: str
    tool_calls: tuple[ToolCall, ...] = ()
    answer: dict[str, Any] | None = None
    confidence: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    raw_text: str | None = None
    answer_error: str | None = None
    finish_reason: str | None = None
    attempts: tuple[Attempt, ...] = ()

    @property
    def truncated(self) -> bool:
        """Whether the model stopped at its output limit (the reply is incomplete)."""
        return self.finish_reason == "length"


class ModelProvider(Protocol):
    """A model backend. Implementations raise ``handrail.errors`` types, never transport errors."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Run one turn of the conversation."""
        ...
