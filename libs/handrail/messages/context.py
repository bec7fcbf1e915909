"""What of the task an agent's model saw in a step: the context view, and what compaction replaced."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from handrail.messages.base import Payload


class Compaction(Payload):
    """A part of the conversation the model no longer saw from turn ``at_turn`` on, and what it saw instead."""

    at_turn: int = Field(ge=1, description="The model turn of the step whose prompt first left these messages out.")
    policy: Literal["keep_last_turns", "drop_oldest_observations", "summarise"]
    replaced: list[str] = Field(
        min_length=1,
        description="sha256 of each message left out or elided (RFC 8785 JSON of its role, content, tool calls, "
        "tool_call_id and name, empty ones omitted), oldest first.",
    )
    tokens_before: int = Field(ge=0, description="What the replaced messages took.")
    tokens_after: int = Field(ge=0, description="What took their place (a note, elided stubs or a summary).")
    summary: str | None = Field(default=None, description="For `summarise`: the summary the model saw instead.")


class ContextSeen(Payload):
    """The part of the task context a step's agent was shown, and the compactions of its conversation."""

    view: str | None = Field(default=None, description="The named view the step declared, if it named one.")
    pointers: list[str] | None = Field(
        default=None, description="The JSON Pointers the view shows; absent: the whole context."
    )
    view_hash: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the RFC 8785 JSON of the context the agent was shown."
    )
    compactions: list[Compaction] = Field(default_factory=list)
