"""A workflow's contract, as declared in ``config/workflows.yaml``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

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


def branch_hop(name: str) -> tuple[str, str] | None:
    """``(step, branch)`` when the hop ``name`` is a branch of a parallel step (``<step>.<branch>``), else None.

    Told from the name alone, as ``TaskStore``'s accept script tells it: a branch chains on a head of its own.
    """
    step, dot, branch = name.partition(".")
    return (step, branch) if dot and branch != EVALUATION_HOP[1:] else None


class BranchSpec(BaseModel):
    """One branch of a parallel step: the agent that runs it and the schema its output must satisfy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    output_schema: dict[str, Any] = Field(description="JSON Schema the branch's output must satisfy.")
    context_view: str | list[Pointer] | None = Field(
        default=None, description="What of the task context the branch's agent sees; default: all of it."
    )


#: A branch's name: a step's, and not ``evaluation`` (the hop ``<step>.evaluation`` is an evaluator's).
def _not_evaluation(name: str) -> str:
    if name == "evaluation":
        raise ValueError("a branch may not be called `evaluation` (the hop `<step>.evaluation` is an evaluator's)")
    return name


BranchName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$"), AfterValidator(_not_evaluation)]


class Aggregate(StrEnum):
    """How a vote's samples decide, short of a CEL expression."""

    MAJORITY = "majority"  # the most common answer, given by at least `quorum` samples
    UNANIMOUS = "unanimous"  # every sample the same answer


class VoteSpec(BaseModel):
    """Voting: the same agent runs ``samples`` times on the same input, at once, and the answers decide.

    ``aggregate`` is ``majority`` (the most common answer, if at least ``quorum`` samples gave it),
    ``unanimous``, or a CEL expression over ``samples`` (the answers, in sample order) and ``context`` that
    says whether they agree; the step's output is then the most common answer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    samples: int = Field(ge=2, le=15)
    quorum: int | None = Field(default=None, ge=1, description="For majority: samples that must agree; default: most.")
    aggregate: Aggregate | Expression = Aggregate.MAJORITY
    on_disagreement: Exhausted = Field(
        default=Exhausted.FAIL, description="fail: the task ends failed (vote_disagreement); review: a person decides."
    )

    @model_validator(mode="after")
    def _quorum_within_samples(self) -> VoteSpec:
        if self.quorum is not None and self.quorum > self.samples:
            raise ValueError(f"quorum {self.quorum} is more than the {self.samples} samples")
        return self

    @property
    def needed(self) -> int:
        """The samples a majority needs to agree."""
        return self.quorum if self.quorum is not None else self.samples // 2 + 1


#: The plan an orchestrating step's agent answers with: subtasks, each for a worker agent.
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["subtasks"],
    "properties": {
        "subtasks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "agent", "input"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z][a-z0-9_-]*$", "not": {"const": "evaluation"}},
                    "agent": {"type": "string"},
                    "input": {"type": "object"},
                },
            },
        }
    },
}


class BranchFailure(StrEnum):
    """What a parallel step does when one of its branches fails, halts or breaks its schema."""

    FAIL = "fail"  # the task ends, as for any step
    QUORUM = "quorum"  # the others go on; joined with the branches that succeeded, if at least `quorum` did
    REVIEW = "review"  # the others go on; once all are in, a person decides on what the successful ones gave


class StepKind(StrEnum):
    """What a step's agent does."""

    AGENT = "agent"  # runs the step and answers its output
    ORCHESTRATE = "orchestrate"  # answers a plan of subtasks, which run at once on worker agents and are joined


class StepSpec(BaseModel):
    """One step: the agent that runs it and the schema its output must satisfy, or, for a parallel step
    (sectioning), the branches that run at the same time, each with its own agent and schema, or, for a
    vote, the samples of one agent that run at the same time (``sample-1`` ...), their answers deciding."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    agent: str | None = Field(default=None, description="The agent that runs the step; none for a parallel step.")
    output_schema: dict[str, Any] = Field(
        description="JSON Schema the step's output must satisfy; for a parallel step, the branches' outputs "
        "under their names (made from the branches' schemas when not given)."
    )
    context_view: str | list[Pointer] | None = Field(
        default=None,
        description="What of the task context the agent sees: a view's name or JSON Pointers; default: all of it.",
    )
    evaluator: EvaluatorSpec | None = Field(
        default=None, description="Judge the output and run the step again with the critique until it passes."
    )
    parallel: dict[BranchName, BranchSpec] | None = Field(
        default=None,
        min_length=2,
        description="Branches run at the same time on their agents' topics (the hops `<step>.<branch>`); the "
        "step after receives their outputs under `steps.<step>.<branch>`, once all of them are in.",
    )
    vote: VoteSpec | None = Field(
        default=None, description="Run one agent `samples` times at once; the answers decide the output."
    )
    on_branch_failure: BranchFailure = Field(
        default=BranchFailure.FAIL, description="For a parallel step: when a branch fails, halts or breaks its schema."
    )
    quorum: int | None = Field(
        default=None, ge=1, description="For `on_branch_failure: quorum`: the branches that must succeed."
    )
    kind: StepKind = StepKind.AGENT
    workers: list[str] = Field(
        default_factory=list, description="For `kind: orchestrate`: the agents a plan's subtasks may name."
    )
    max_subtasks: int = Field(default=5, ge=1, le=20, description="For `kind: orchestrate`: the most a plan may have.")
    subtask_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="For `kind: orchestrate`: the JSON Schema each subtask's output must satisfy.",
    )

    @model_validator(mode="before")
    @classmethod
    def _orchestrated_output_schema(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == StepKind.ORCHESTRATE.value and "output_schema" not in data:
            data = {**data, "output_schema": {"type": "object"}}  # the subtasks' outputs, under their names
        return data

    @model_validator(mode="before")
    @classmethod
    def _parallel_output_schema(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("parallel"), dict) and "output_schema" not in data:
            branches = data["parallel"]
            properties = {
                name: branch.get("output_schema", {}) if isinstance(branch, dict) else branch.output_schema
                for name, branch in branches.items()
            }
            data = {**data, "output_schema": {"type": "object", "required": sorted(branches), "properties": properties}}
        return data

    @model_validator(mode="after")
    def _one_agent_or_branches(self) -> StepSpec:
        if sum(x is not None for x in (self.agent, self.parallel, self.vote)) != 1:
            raise ValueError(
                f"step {self.name!r}: give one of `agent`, `parallel` (branches) or `vote`, not several or none"
            )
        if self.parallel is not None and (self.evaluator is not None or self.context_view is not None):
            raise ValueError(
                f"step {self.name!r}: a parallel step has no `evaluator` or `context_view` of its own "
                "(each branch has its `context_view`)"
            )
        if self.vote is not None and self.evaluator is not None:
            raise ValueError(f"step {self.name!r}: a vote has no `evaluator`")
        if self.kind == StepKind.ORCHESTRATE and (self.agent is None or not self.workers or self.evaluator):
            raise ValueError(
                f"step {self.name!r}: an orchestrating step has an `agent` (its planner), `workers` its plan may "
                "name, and no `evaluator`"
            )
        if self.kind != StepKind.ORCHESTRATE and self.workers:
            raise ValueError(f"step {self.name!r}: only a step of `kind: orchestrate` has `workers`")
        if (self.on_branch_failure != BranchFailure.FAIL or self.quorum is not None) and self.parallel is None:
            raise ValueError(f"step {self.name!r}: `on_branch_failure` and `quorum` are for a parallel step")
        if (self.on_branch_failure == BranchFailure.QUORUM) != (self.quorum is not None):
            raise ValueError(f"step {self.name!r}: `on_branch_failure: quorum` needs a `quorum`, and only it has one")
        if self.quorum is not None and self.parallel is not None and self.quorum > len(self.parallel):
            raise ValueError(f"step {self.name!r}: quorum {self.quorum} is more than its {len(self.parallel)} branches")
        return self

    @property
    def orchestrates(self) -> bool:
        return self.kind == StepKind.ORCHESTRATE

    @property
    def branches(self) -> dict[str, BranchSpec] | None:
        """The branches the step forks into: its ``parallel`` ones, or a vote's samples; None: it forks not."""
        if self.vote is not None:
            sample = BranchSpec(agent=self.vote.agent, output_schema=self.output_schema, context_view=self.context_view)
            return {f"sample-{i}": sample for i in range(1, self.vote.samples + 1)}
        return self.parallel

    @property
    def agents(self) -> tuple[str, ...]:
        """Every agent the step runs: its agent, its branches' (in branch order), or its vote's."""
        if self.vote is not None:
            return (self.vote.agent,)
        if self.orchestrates:
            assert self.agent is not None
            return tuple(dict.fromkeys([self.agent, *self.workers]))
        if self.parallel is not None:
            return tuple(branch.agent for branch in self.parallel.values())
        assert self.agent is not None
        return (self.agent,)


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
            for name, branch in (step.parallel or {}).items():
                check_view(f"{step.name}.{name}", branch.context_view, self.views)
        if self.steps[0].branches is not None:
            raise ValueError(
                f"step {self.steps[0].name!r}: the first step may not be parallel or a vote; put a step before it"
            )
        return self

    @property
    def agents(self) -> tuple[str, ...]:
        """Every agent the workflow runs, in step order, once each: steps', branches' and evaluators'."""
        found = [
            a
            for s in self.steps
            for a in (*s.agents, *([s.evaluator.agent] if s.evaluator and s.evaluator.agent else []))
        ]
        return tuple(dict.fromkeys(found))

    def step(self, name: str) -> StepSpec:
        """Return the step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def hop(self, name: str) -> StepSpec | None:
        """The step a hop called ``name`` runs: a step of the workflow, the evaluation hop of one whose
        evaluator is an agent (``<step>.evaluation``: that agent, answering VERDICT_SCHEMA), or a branch of a
        parallel step (``<step>.<branch>``); None: none of them. A parallel step itself runs no hop."""
        generator = self.generator_of(name)
        if generator is not None:
            assert generator.evaluator is not None
            assert generator.evaluator.agent is not None
            return StepSpec.model_construct(
                name=name, agent=generator.evaluator.agent, output_schema=VERDICT_SCHEMA, context_view=None
            )
        forked = self.fork_of(name)
        if forked is not None and forked.orchestrates:  # a subtask: its agent is the plan's, one of the workers
            return StepSpec.model_construct(
                name=name, agent=None, output_schema=forked.subtask_schema, context_view=None, workers=forked.workers
            )
        if forked is not None:
            assert forked.branches is not None
            branch = forked.branches[name.split(".", 1)[1]]
            return StepSpec.model_construct(
                name=name, agent=branch.agent, output_schema=branch.output_schema, context_view=branch.context_view
            )
        step = next((s for s in self.steps if s.name == name), None)
        return step if step is not None and step.branches is None else None

    def fork_of(self, name: str) -> StepSpec | None:
        """The parallel step the branch hop ``name`` (``<step>.<branch>``) belongs to; None for any other hop."""
        hop = branch_hop(name)
        if hop is None:
            return None
        step_name, branch = hop
        step = next((s for s in self.steps if s.name == step_name), None)
        if step is not None and step.orchestrates:
            return step  # a subtask of its plan
        branches = step.branches if step is not None else None
        if branches is None or branch not in branches:
            return None
        return step

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
