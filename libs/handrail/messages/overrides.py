"""What a forked task runs differently from its workflow's contracts: a prompt version or a model per agent.

An operator's ``handrail task fork --prompt AGENT@VERSION --model [AGENT=]NAME`` sets it on the
fork's first handoff; it travels with the task from hop to hop (``HandoffEnvelope.overrides``, then
``StepCompleted.overrides``, then the next handoff), so every step of the fork runs with it and
no other task is touched. Signed and hashed with the envelope like the rest of it.
"""

from __future__ import annotations

from pydantic import Field

from handrail.messages.base import Payload


class StepOverrides(Payload):
    """Per agent: the prompt version and the model its steps of this task use instead of the declared ones."""

    prompts: dict[str, str] = Field(
        default_factory=dict,
        description="Agent name -> version of its declared prompt (`config/prompts/<prompt>/<version>.md`).",
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Agent name -> a model of the catalogue (`models.yaml`), used instead of its model chain.",
    )

    @property
    def empty(self) -> bool:
        return not (self.prompts or self.models)
