"""A workflow's contract, as declared in ``config/workflows.yaml``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from handrail.contracts.context import Pointer, check_view
from handrail.contracts.expressions import Expression
from handrail.messages.calls import BudgetTopUp


class EvaluationRule(BaseModel):
    """A CEL expression over the step's ``output`` and ``context`` that must hold, and what its agent is
    told when it does not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    require: Expression
    critique: str = Field(min_length=1, description="What the agent is told when the expression does not hold.")


class Exhausted(StrEnum):
    """What becomes of a task whose step still fails its evaluation after its last iteration."""

    FAIL = "fail"  # the task ends ``failed`` (``evaluation_exhausted``)
    REVIEW = "review"  # a person decides on the last output, under the workflow's review policy


class EvaluatorSpec(BaseModel):
    """Evaluator-optimizer: the step's output is judged, and the step runs again with the critique until it
    passes, ``max_iterations`` runs in all.

    The judgement is the output's ``output_schema``, then this ``schema`` (stricter, if given), then the
    ``rules`` in order; every failure is a line of the critique. The step runs again with the critique
    under ``evaluations.<step>`` of its context (``iteration``, the run it is, and ``critique``), its
    last output still under ``steps.<step>``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    agent: str | None = Field(
        default=None,
        description=(
            "An agent that judges an output the schema and rules passed, in a hop of its own (the step "
            "`<step>.evaluation`); it answers `passed` and `critique` (VERDICT_SCHEMA)."
        ),
    )
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="A JSON Schema the output must also satisfy to pass."
    )
    rules: list[EvaluationRule] = Field(default_factory=list)
    max_iterations: int = Field(default=3, ge=1, le=20, description="Runs of the step in all, the first one included.")
    on_exhausted: Exhausted = Exhausted.FAIL

    @model_validator(mode="after")
    def _judges_something(self) -> EvaluatorSpec:
        if self.schema_ is None and not self.rules and self.agent is None:
            raise ValueError("an evaluator needs an `agent`, a `schema` or `rules` to judge the output by")
        return self


#: What an evaluator agent answers about the output it was shown.
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["passed"],
    "properties": {
        "passed": {"type": "boolean"},
        "critique": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    },
}
#: The hop in which a step's evaluator agent judges its output is the step ``<step>.evaluation`` (a dot
#: is in no step's name).
EVALUATION_HOP = ".evaluation"


class StepSpec(BaseModel):
    """One step: the agent that runs it and the schema its output must satisfy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    agent: str
    output_schema: dict[str, Any] = Field(description="JSON Schema the step's output must satisfy.")
    context_view: str | list[Pointer] | None = Field(
        default=None,
        description="What of the task context the agent sees: a view's name or JSON Pointers; default: all of it.",
    )
    evaluator: EvaluatorSpec | None = Field(
        default=None, description="Judge the output and run the step again with the critique until it passes."
    )


class DefaultAction(StrEnum):
    """What happens to a review nobody decided before its deadline."""

    REJECT = "reject"  # the task ends `rejected`
    ESCALATE = "escalate"  # the review goes to the next higher role, with a fresh deadline


class ReviewPolicy(BaseModel):
    """Who must decide a review, how many of them, and what happens when nobody does in time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str = Field(default="reviewer", description="The lowest role that may decide; higher roles may too.")
    approvals_required: int = Field(default=1, ge=1, le=10, description="Distinct approvers needed (K of N).")
    timeout_s: float = Field(default=24 * 3600.0, gt=0, description="How long the review may stay pending.")
    default_action: DefaultAction = DefaultAction.REJECT


class EscalationRule(ReviewPolicy):
    """When a person must decide: a CEL expression over a step's ``output`` and ``context``, or, for a
    rule bound to a ``tool``, over a proposed call's ``args`` and ``context`` before the call runs."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    step: str | None = Field(default=None, description="The step whose output is checked; default: the last step.")
    tool: str | None = Field(
        default=None,
        description="Check the rule before each call to this tool (in `step`, or any step), not after the step.",
    )
    when: Expression
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
    review: ReviewPolicy = Field(
        default_factory=ReviewPolicy,
        description="The policy of reviews no rule asked for: approval tools, low confidence, approval gates, halts.",
    )
    max_top_up: BudgetTopUp | None = Field(
        default=None,
        description=(
            "The most budget reviewers may add to one task, all its top-ups together, approving its halts "
            "(a budget or deadline halt). Absent: no top-up."
        ),
    )
    locked_fields: list[Annotated[str, Field(pattern=r"^(/[^/]+)+$")]] = Field(
        default_factory=list,
        description="JSON Pointers into the task context reviewers may not edit (e.g. /input/employee_id).",
    )
    parked_time_counts: bool = Field(
        default=False,
        description="Whether time parked for review counts against the task's wall clock (by default it does not).",
    )
    views: dict[str, list[Pointer]] = Field(
        default_factory=dict, description="Named context views (JSON Pointers) steps may name as `context_view`."
    )

    @model_validator(mode="after")
    def _step_views_exist(self) -> WorkflowSpec:
        for step in self.steps:
            check_view(step.name, step.context_view, self.views)
        return self

    def step(self, name: str) -> StepSpec:
        """Return the step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def hop(self, name: str) -> StepSpec | None:
        """The step a hop called ``name`` runs: a step of the workflow, or the evaluation hop of one whose
        evaluator is an agent (``<step>.evaluation``: that agent, answering VERDICT_SCHEMA); None: neither."""
        generator = self.generator_of(name)
        if generator is not None:
            assert generator.evaluator is not None
            assert generator.evaluator.agent is not None
            return StepSpec.model_construct(
                name=name, agent=generator.evaluator.agent, output_schema=VERDICT_SCHEMA, context_view=None
            )
        return next((s for s in self.steps if s.name == name), None)

    def generator_of(self, name: str) -> StepSpec | None:
        """The step whose output the evaluation hop ``name`` judges; None when ``name`` is no evaluation hop."""
        if not name.endswith(EVALUATION_HOP):
            return None
        step = next((s for s in self.steps if s.name == name.removesuffix(EVALUATION_HOP)), None)
        if step is None or step.evaluator is None or step.evaluator.agent is None:
            return None
        return step

    def next_step(self, name: str) -> StepSpec | None:
        """Return the step after ``name``, or None when ``name`` is the last."""
        names = [s.name for s in self.steps]
        index = names.index(name)
        return self.steps[index + 1] if index + 1 < len(self.steps) else None

    def rules_for(self, step: str) -> list[EscalationRule]:
        """The escalation rules checked after ``step``, in declaration order."""
        last = self.steps[-1].name
        return [r for r in self.escalations if r.tool is None and (r.step or last) == step]

    def rules_before(self, step: str, tool: str) -> list[EscalationRule]:
        """The escalation rules checked before a call to ``tool`` in ``step``, in declaration order."""
        return [r for r in self.escalations if r.tool == tool and r.step in (None, step)]

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
