"""What a step's model and tools answered, kept so the step can be re-run without them (``handrail replay``).

A worker records every model reply and tool answer of a step, in the order the step got them, and
sends them with the step's report (``StepCompleted.recording``, on ``<prefix>steps``: kept as long
as that topic keeps records, ``handrail topics ensure --steps-retention-days``). The validator puts
the recording's hash in the step's audit record, so the hash-chained trail commits to exactly one
recording per step: one altered afterwards no longer hashes to what the trail holds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from handrail.hashing import canonical_json, sha256_hex


class RecordedFailure(BaseModel):
    """A tool attempt that raised: a ``ToolFailure`` (it did nothing) or an outcome unknown (it may have acted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raised: Literal["tool_failure", "outcome_unknown"]
    kind: str = Field(description="The failure kind: transient, invalid_input, permanent or auth.")
    message: str
    timed_out: bool = False


class RecordedCall(BaseModel):
    """One answer the step got: a model's reply, a tool attempt's result or failure, or a call the guard refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["model", "tool", "refused"]
    name: str = Field(description="The model the request named, or the tool.")
    request_hash: str = Field(
        description="For a model: sha256 of the canonical request (messages, tools, model); for a tool: its args_hash."
    )
    reply: dict[str, Any] | None = Field(default=None, description="The model's reply, or the tool's result.")
    failure: RecordedFailure | None = None
    refusal: dict[str, Any] | None = Field(
        default=None, description="For ``refused``: the structured error the model was shown instead."
    )


class StepRecording(BaseModel):
    """Every answer one step got, in order, and the prompt version it rendered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(description="The prompt name@version the step rendered.")
    calls: list[RecordedCall] = Field(default_factory=list)

    def content_hash(self) -> str:
        """sha256 of the recording's canonical JSON: what the step's audit record commits to."""
        return sha256_hex(canonical_json(self.model_dump(mode="json", exclude_none=True)))
