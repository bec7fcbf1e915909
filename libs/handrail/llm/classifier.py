"""Picking a task's workflow with a cheap model, under a confidence floor.

The router's rules come first; this is for tasks they leave open. The model is
told the workflows (name and description) and the task's input, and answers
``{"workflow": ..., "confidence": ..., "reason": ...}``. A confident answer
naming a known workflow routes the task there. Anything else (below the floor,
an unknown workflow, an unusable reply, a model that is down) routes it the
configured safe way: to human review, or to a default workflow. Classifying
never raises for a model problem: the task always gets a route.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from handrail.errors import ContractError, Rejected, TaskHalted
from handrail.llm.base import ChatMessage, ModelProvider, ModelRequest
from handrail.llm.errors import ModelError


class BelowFloor(StrEnum):
    """Where a task goes when the classifier is not sure enough."""

    REVIEW = "review"
    DEFAULT = "default"


class ClassifierSpec(BaseModel):
    """The classifier's contract: which model, how sure it must be, and the safe way otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_chain: list[str] = Field(min_length=1, description="A cheap model first; fallbacks after.")
    confidence_floor: float = Field(default=0.8, ge=0, le=1)
    below_floor: BelowFloor = BelowFloor.REVIEW
    default_workflow: str | None = None

    @model_validator(mode="after")
    def _default_needs_a_workflow(self) -> ClassifierSpec:
        if self.below_floor == BelowFloor.DEFAULT and not self.default_workflow:
            raise ValueError("field 'default_workflow': required when below_floor is 'default'")
        return self


@dataclass(frozen=True)
class Routing:
    """Where the classifier sends a task, and why.

    ``route`` is ``workflow`` (the model was sure), ``default`` or ``review``;
    ``proposed`` is what the model said, kept for the reviewer and the audit record.
    """

    route: Literal["workflow", "default", "review"]
    workflow: str | None
    proposed: str | None
    confidence: float | None
    reason: str
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


_INSTRUCTIONS = """You route tasks to workflows. The workflows are:
{catalogue}

Read the task in the next message and answer with exactly one JSON object and no other text:
{{"workflow": "<one of the names above, or null if none fits>", "confidence": <0 to 1>, "reason": "<short>"}}"""


class WorkflowClassifier:
    """Classifies a task's input into one of ``workflows`` (name -> description)."""

    def __init__(self, provider: ModelProvider, spec: ClassifierSpec, workflows: Mapping[str, str]) -> None:
        if spec.default_workflow is not None and spec.default_workflow not in workflows:
            raise ContractError(
                f"classifier: field 'default_workflow': unknown workflow {spec.default_workflow!r} "
                f"(known: {sorted(workflows)})"
            )
        self.provider = provider
        self.spec = spec
        self.workflows = dict(workflows)

    async def classify(self, task_input: Mapping[str, Any], hint: str | None = None) -> Routing:
        """The route for a task with ``task_input`` (and the submitter's free-text ``hint``, if any)."""
        catalogue = "\n".join(f"- {name}: {text}" for name, text in sorted(self.workflows.items()))
        task = {"input": dict(task_input), **({"hint": hint} if hint else {})}
        request = ModelRequest(
            model=self.spec.model_chain[0],
            messages=[
                ChatMessage("system", _INSTRUCTIONS.format(catalogue=catalogue)),
                ChatMessage("user", json.dumps(task, sort_keys=True)),
            ],
        )
        try:
            reply = await self.provider.complete(request)
        except (ModelError, Rejected, TaskHalted) as exc:
            return self._fallback(None, None, f"the classifier model was unavailable: {exc}")
        usage: dict[str, Any] = {
            "model": reply.model,
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cost_usd": reply.cost_usd,
        }
        answer = reply.answer
        if answer is None:
            return self._fallback(None, None, f"the classifier's reply was unusable: {reply.answer_error}", **usage)
        proposed = answer.get("workflow")
        confidence = answer.get("confidence")
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
            return self._fallback(_name(proposed), None, "the classifier gave no confidence from 0 to 1", **usage)
        if not isinstance(proposed, str) or proposed not in self.workflows:
            return self._fallback(
                _name(proposed), float(confidence), f"the classifier proposed no known workflow ({proposed!r})", **usage
            )
        if confidence < self.spec.confidence_floor:
            return self._fallback(
                proposed,
                float(confidence),
                f"confidence {confidence:.2f} is below the floor {self.spec.confidence_floor:.2f}",
                **usage,
            )
        reason = str(answer.get("reason") or "the classifier was sure")
        return Routing("workflow", proposed, proposed, float(confidence), reason, **usage)

    def _fallback(self, proposed: str | None, confidence: float | None, reason: str, **usage: Any) -> Routing:
        if self.spec.below_floor == BelowFloor.DEFAULT:
            return Routing("default", self.spec.default_workflow, proposed, confidence, reason, **usage)
        return Routing("review", None, proposed, confidence, reason, **usage)


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) else None
