"""The provider interface: a chat request with tools in, a reply with tool calls or an answer out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from handrail.tools.registry import ToolSpec


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model proposes; ``arguments`` is whatever the model sent."""

    id: str
    name: str
    arguments: Any


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
class ModelReply:
    """The model's turn: tool calls to run, or a final ``answer`` (a JSON object)."""

    provider: str
    model: str
    tool_calls: tuple[ToolCall, ...] = ()
    answer: dict[str, Any] | None = None
    confidence: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class ModelProvider(Protocol):
    """A model backend. Implementations raise ``handrail.errors`` types, never transport errors."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Run one turn of the conversation."""
        ...
