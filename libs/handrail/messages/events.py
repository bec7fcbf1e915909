"""Decision events (``<prefix>events``) and control records (``<prefix>control``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from handrail.messages.base import Payload


class DecisionEvent(Payload):
    """One model call or tool call a worker made (or was stopped from making), keyed by task id."""

    schema_version: Literal[1] = 1
    message_id: str
    task_id: str
    workflow: str
    step: str
    agent: str
    kind: Literal["model_call", "tool_call"]
    name: str = Field(description="The model or tool.")
    args_hash: str | None = None
    outcome: Literal["ok", "error", "rejected", "short_circuited", "halted"]
    error_type: str | None = None
    latency_ms: float = Field(ge=0)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    at: datetime


class ControlRecord(Payload):
    """The latest word on a halt or a breaker, keyed ``<kind>:<scope>:<name>`` on the compacted control topic."""

    schema_version: Literal[1] = 1
    message_id: str
    kind: Literal["halt", "breaker"]
    scope: Literal["task", "agent", "tool", "model"]
    name: str
    state: str = Field(description="halted | resumed for halts; closed | open | half_open for breakers.")
    reason: str
    by: str = Field(description="Who decided: an operator, a worker, or the circuit-breaker service.")
    at: datetime

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.scope}:{self.name}"
