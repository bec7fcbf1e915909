"""A workflow's contract, as declared in ``config/workflows.yaml``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StepSpec(BaseModel):
    """One step: the agent that runs it and the schema its output must satisfy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    agent: str
    output_schema: dict[str, Any] = Field(description="JSON Schema the step's output must satisfy.")


class Condition(BaseModel):
    """A test on one value of the step: ``path`` (dotted, from ``output`` or ``context``) equals ``equals``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(pattern=r"^(output|context)(\.[A-Za-z0-9_-]+)+$")
    equals: Any

    def holds(self, scope: dict[str, Any]) -> bool:
        """Whether the condition holds in ``scope`` (``{"output": ..., "context": ...}``)."""
        value: Any = scope
        for part in self.path.split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        return bool(value == self.equals)


class EscalationRule(BaseModel):
    """When the final output needs a person, and which role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    when: Condition
    role: str
    reason: str


class TaskLimits(BaseModel):
    """The whole task's budget, across all its agents; each agent's own limits apply within it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(default=20, ge=1)
    max_tokens: int = Field(default=100_000, ge=0)
    max_cost_usd: float = Field(default=5.0, ge=0)
    deadline_s: float = Field(
        default=600.0, gt=0, description="Wall clock; a task's own deadline_s can only shorten it."
    )


class WorkflowSpec(BaseModel):
    """A named sequence of steps a task runs through."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    goal: str = Field(description="The task's goal; `{field}` is filled from the input.")
    input_schema: dict[str, Any] = Field(description="JSON Schema the task's input must satisfy.")
    allowed_submitters: list[str] = Field(default_factory=lambda: ["*"], description="`*` allows anyone.")
    steps: list[StepSpec] = Field(min_length=1)
    limits: TaskLimits = Field(default_factory=TaskLimits)
    escalations: list[EscalationRule] = Field(default_factory=list)

    def step(self, name: str) -> StepSpec:
        """Return the step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def next_step(self, name: str) -> StepSpec | None:
        """Return the step after ``name``, or None when ``name`` is the last."""
        names = [s.name for s in self.steps]
        index = names.index(name)
        return self.steps[index + 1] if index + 1 < len(self.steps) else None

    def allows(self, submitter: str | None) -> bool:
        """Whether ``submitter`` may submit tasks to this workflow."""
        return "*" in self.allowed_submitters or (submitter is not None and submitter in self.allowed_submitters)

    def goal_for(self, task_input: dict[str, Any]) -> str:
        """The goal text for a task with ``task_input``."""
        try:
            return self.goal.format_map(_Missing(task_input))
        except (ValueError, IndexError):
            return self.goal


class _Missing(dict[str, Any]):
    """Leaves ``{unknown}`` placeholders as they are instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
