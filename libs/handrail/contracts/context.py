"""What part of a task's context an agent sees, and how much of its prompt each section may take.

Two declarations, validated at start-up:

- a workflow's ``views`` (name -> JSON Pointers) and a step's ``context_view`` (a view's name or a list of
  pointers): the step's agent sees only those parts of the context (``handrail.context.views``);
- an agent's ``context`` in ``agents.yaml``: a token cap per prompt section, the model's window, and the
  policy that applies when a section is over its cap (``handrail.context.assembly``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: RFC 6901: "" (the whole document) or "/"-separated tokens where "~" is only ever "~0" or "~1".
_POINTER = re.compile(r"^(/([^~/]|~[01])*)*$")


def _pointer(value: str) -> str:
    if not _POINTER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a JSON Pointer (RFC 6901): it must be empty or start with '/', "
            "and '~' must be written '~0' (and '/' inside a key '~1'), e.g. '/input/amount'"
        )
    return value


Pointer = Annotated[str, AfterValidator(_pointer)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(StrEnum):
    """The parts a prompt is assembled from, in the order the model reads them."""

    SYSTEM = "system"  # the system prompt
    TOOLS = "tools"  # the tool descriptions (names, descriptions, input schemas)
    TASK = "task"  # the task's goal, the step, and the context the step's view shows
    HISTORY = "history"  # what the model said, corrections, summaries of earlier turns
    OBSERVATIONS = "observations"  # tool results


class Policy(StrEnum):
    """What happens when the conversation (history or observations) is over its cap."""

    KEEP_LAST_TURNS = "keep_last_turns"  # earlier turns are dropped, the last `keep_last_turns` stay
    DROP_OLDEST_OBSERVATIONS = "drop_oldest_observations"  # the oldest tool results are elided first
    SUMMARISE = "summarise"  # earlier turns are replaced by a summary the agent's model writes


class SectionCaps(_Strict):
    """Token caps per prompt section; an absent cap means only the window bounds that section."""

    system: int | None = Field(default=None, ge=0)
    tools: int | None = Field(default=None, ge=0)
    task: int | None = Field(default=None, ge=0)
    history: int | None = Field(default=None, ge=0)
    observations: int | None = Field(default=None, ge=0)

    def cap(self, section: Section) -> int | None:
        """The cap of ``section``, or None."""
        cap: int | None = getattr(self, section.value)
        return cap


class ContextBudget(_Strict):
    """An agent's prompt budget: its model's window, a cap per section, and the policy for going over."""

    window_tokens: int | None = Field(
        default=None, ge=1, description="The model's context window: the prompt plus max_output_tokens must fit."
    )
    sections: SectionCaps = Field(default_factory=SectionCaps)
    policy: Policy = Policy.KEEP_LAST_TURNS
    keep_last_turns: int = Field(default=4, ge=1, description="Turns kept as they are when a policy applies.")
    summary_max_tokens: int = Field(
        default=512, ge=16, description="For `summarise`: the most the summary may take (asked for, then enforced)."
    )

    @property
    def unbounded(self) -> bool:
        """Whether nothing is capped (the prompt goes as it is, as before budgets existed)."""
        return self.window_tokens is None and self.sections == SectionCaps()


def check_view(step: str, view: str | list[str] | None, views: dict[str, list[str]]) -> None:
    """A step's ``context_view`` that is a name names one of the workflow's ``views``, or ValueError."""
    if isinstance(view, str) and view not in views:
        raise ValueError(
            f"step {step!r}: field 'context_view': unknown view {view!r} (the workflow's views: {sorted(views)})"
        )
