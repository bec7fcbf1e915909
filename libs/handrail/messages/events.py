"""Decision events (``<prefix>events``) and control records (``<prefix>control``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from handrail.messages.base import Payload


class DecisionEvent(Payload):
    """One model call or tool call a worker made (or was stopped from making), keyed by task id."""

    schema_version: Literal[1] = 1
    message_id: str
    task_id: str
    workflow: str
    step: str
    agent: str
    kind: Literal["model_call", "tool_call", "baseline"] = Field(
        description="A call, or (``baseline``) the circuit-breaker finding the task unlike its agent's baseline."
    )
    name: str = Field(description="The model or tool; for a baseline deviation, the measure.")
    args_hash: str | None = None
    outcome: Literal["ok", "error", "rejected", "short_circuited", "halted", "deviation"]
    error_type: str | None = None
    reason: str | None = Field(default=None, description="For a deviation: the task's figure against the baseline.")
    latency_ms: float = Field(ge=0)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    prompt: str | None = Field(
        default=None, description="For a model call: the prompt name@version it was made with (canaries count it)."
    )
    at: datetime


class DecisionEvents(Payload):
    """The decision events of one step, in the order they happened: one record on ``<prefix>events``.

    A worker sends the events of the calls that went well together, with the step's
    output; an error, a stop or a halt goes out at once, with the events before it, so
    the circuit-breaker hears of a failing model or tool without waiting for the step.
    A lone ``DecisionEvent`` (what the topic carried before) reads as a batch of one.
    """

    schema_version: Literal[1] = 1
    message_id: str
    task_id: str
    events: list[DecisionEvent] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_event(cls, data: Any) -> Any:
        if isinstance(data, dict) and "events" not in data and "kind" in data:
            return {"message_id": data.get("message_id"), "task_id": data.get("task_id"), "events": [data]}
        return data


class ControlRecord(Payload):
    """The latest word on a halt, a breaker or a canary, keyed ``<kind>:<scope>:<name>`` on the compacted
    control topic."""

    schema_version: Literal[1] = 1
    message_id: str
    kind: Literal["halt", "breaker", "canary"]
    scope: Literal["task", "agent", "tool", "model"] = Field(description="For a canary: agent.")
    name: str
    state: str = Field(
        description="halted | resumed for halts; closed | open | half_open for breakers; rolled_back for canaries."
    )
    reason: str
    by: str = Field(description="Who decided: an operator, a worker, or the circuit-breaker service.")
    at: datetime
    error_type: str | None = Field(
        default=None, description="For a halt: what the task's step is reported stopped by (behaviour_deviation...)."
    )

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.scope}:{self.name}"
