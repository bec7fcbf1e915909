"""A tool call that waits for a person before it runs, and where its step stands meanwhile.

A worker that is about to make a call that needs approval (a tool flagged
``requires_approval``, a side effect of an agent on approval gates, or an
escalation rule bound to the tool) does not make it: it reports its step
``awaiting_approval`` with the ``ProposedCall`` and the step's ``StepProgress``
(the conversation so far and the calls still to run). The validator parks the task
on ``reviews.requested`` with both; a decision hands the step back to its agent
with a ``StepResume``, and the agent - any replica - carries on from that
checkpoint: the approved call runs (once, by its idempotency key), a refused one
becomes an error the model sees.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from handrail.messages.base import Payload
from handrail.messages.calls import Decision, Usage
from handrail.messages.context import ContextSeen


class ProposedCall(Payload):
    """The call the model proposed, as a reviewer sees it."""

    call_id: str = Field(description="The model's id for the call, to answer it in the conversation.")
    tool: str
    arguments: dict[str, Any]
    args_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the canonical JSON of `arguments`.")
    idempotency_key: str = Field(description="The key the call runs under: the same call never runs twice.")
    model_reason: str | None = Field(default=None, description="What the model wrote with the call, if anything.")
    why: str = Field(description="Why the call needs a person, for a person.")
    trigger: Literal["rule", "tool_approval", "approval_gate"]
    rule: str | None = Field(default=None, description="The escalation rule bound to the tool that held, if one did.")
    on_reject: Literal["end", "refuse"] = Field(
        description="What a rejection does: end the task, or tell the model the call was refused."
    )


class StepProgress(Payload):
    """Where a step stopped to wait: enough for any replica of its agent to carry on."""

    messages: list[dict[str, Any]] = Field(description="The conversation so far, system prompt first.")
    pending_calls: list[dict[str, Any]] = Field(
        min_length=1, description="The calls of the model's last turn not run yet; the first is the proposed one."
    )
    decisions: list[Decision] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    turns: int = Field(ge=1, description="Model turns the step has used.")
    corrections: int = Field(default=0, ge=0)
    approved_keys: list[str] = Field(default_factory=list, description="Calls of this step people approved before.")
    prompt: str = Field(description="The prompt name@version the step runs with.")
    context_seen: ContextSeen | None = Field(
        default=None, description="The step's view and compactions so far (a summary is not asked for twice)."
    )


class StepResume(Payload):
    """A decision on a proposed call, handed back to the agent with the step's progress."""

    review_id: str
    decision: Literal["approved", "refused"]
    arguments: dict[str, Any] = Field(description="The arguments to run the call with (a reviewer may edit them).")
    by: list[str] = Field(description="Who approved, or who refused.")
    reason: str | None = None
    progress: StepProgress
