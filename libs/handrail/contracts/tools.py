"""How an agent's tool calls are retried and bounded, and what their observations may not say.

Declared per agent in ``agents.yaml``::

    tool_defaults: {max_attempts: 3, base_delay_s: 0.2, max_delay_s: 2.0, jitter: true, timeout_s: 30,
                    on_permanent: fail, on_auth: halt}
    tool_policies:                        # per tool: only the fields that differ from tool_defaults
      convert_currency: {max_attempts: 5, timeout_s: 5}
    observation_deny_patterns: ["ignore (all )?(previous|prior) instructions"]

What each failure kind leads to is ``handrail.tools.kinds``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from handrail.backoff import Backoff

#: What a permanent or auth failure does to the step: ``fail`` it (dead letter, the task fails), or
#: ``halt`` it (the task halts, and goes to a person unless the agent is audit-based).
OnFailure = Literal["fail", "halt"]


class ToolPolicy(BaseModel):
    """Retries, timeout and failure handling of one tool's calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts per call, the first included.")
    base_delay_s: float = Field(default=0.2, ge=0, description="First back-off ceiling; doubles per attempt.")
    max_delay_s: float = Field(default=2.0, ge=0, description="The longest wait between two attempts.")
    jitter: bool = Field(default=True, description="Full jitter: each wait drawn below its ceiling.")
    timeout_s: float = Field(default=30.0, gt=0, description="Per attempt; past it the attempt is transient.")
    on_permanent: OnFailure = "fail"
    on_auth: OnFailure = "halt"

    @model_validator(mode="after")
    def _cap_above_base(self) -> ToolPolicy:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError(f"max_delay_s ({self.max_delay_s:g}) is below base_delay_s ({self.base_delay_s:g})")
        return self

    def backoff(self) -> Backoff:
        """The waits between this tool's attempts (``handrail.backoff``)."""
        return Backoff(
            max_attempts=self.max_attempts,
            base_delay_s=self.base_delay_s,
            max_delay_s=self.max_delay_s,
            jitter=self.jitter,
        )


class ToolPolicyOverride(BaseModel):
    """One tool's entry in ``tool_policies``: the fields it sets replace ``tool_defaults``' ."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int | None = Field(default=None, ge=1, le=10)
    base_delay_s: float | None = Field(default=None, ge=0)
    max_delay_s: float | None = Field(default=None, ge=0)
    jitter: bool | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    on_permanent: OnFailure | None = None
    on_auth: OnFailure | None = None

    def over(self, defaults: ToolPolicy) -> ToolPolicy:
        """``defaults`` with what this entry sets (checked again as a whole)."""
        return ToolPolicy.model_validate({**defaults.model_dump(), **self.model_dump(exclude_none=True)})


def compile_deny_patterns(patterns: list[str]) -> list[re.Pattern[str]]:
    """Each pattern compiled case-insensitively, or ValueError naming the one that does not compile."""
    compiled = []
    for i, pattern in enumerate(patterns):
        if not pattern:
            raise ValueError(f"pattern {i} is empty: it would match every observation")
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"pattern {i} {pattern!r} is not a valid regular expression: {exc}") from None
    return compiled
