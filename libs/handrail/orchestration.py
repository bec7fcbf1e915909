"""Deterministic orchestration, shared by the validator and human review.

- ``escalation_for``: does a finished step need a person? (rules, confidence floor,
  approval gates)
- ``approval_for_call``: must a person approve a proposed call before it runs?
  (rules bound to the tool, tools flagged for approval, side effects on approval gates)
- ``Orchestrator.advance``: move a task on from an accepted step: a ``HandOff``
  of the next step, or its ``End``.
- ``Orchestrator.request_review``: ``Park`` a task on ``reviews.requested`` with its
  whole checkpoint.
- ``Orchestrator.retry``: hand a halted step to its agent again.
- ``evaluate_output`` and ``Orchestrator.iterate``: evaluator-optimizer; a step whose output fails
  its evaluator runs again with the critique, up to ``max_iterations`` runs.

It decides; ``handrail.lifecycle`` carries the transitions out.

Every output id is derived from the checkpoint's message id, so the validator
and a review decision that resume from one checkpoint publish the very same
messages, and a redelivered decision resumes the task once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from handrail.contracts import (
    AgentSpec,
    Autonomy,
    Contracts,
    EscalationRule,
    ExpressionError,
    ReviewPolicy,
    StepSpec,
    WorkflowSpec,
    documents,
    evaluate,
)
from handrail.contracts.workflows import EVALUATION_HOP, PLAN_SCHEMA, Aggregate, VoteSpec
from handrail.errors import TaskHalted
from handrail.hashing import canonical_json, context_hash
from handrail.lifecycle import (
    End,
    Fork,
    HandOff,
    Iterate,
    Join,
    Park,
    branch_handoffs,
    halted_handoff,
    iteration_handoff,
    joined_step,
    next_handoff,
    retry_handoff,
)
from handrail.messages import (
    BudgetSnapshot,
    ForkPoint,
    HandoffEnvelope,
    ProposedCall,
    ReviewRequested,
    ReviewTrigger,
    StepCompleted,
    StepProgress,
    StepResume,
    TaskStatus,
    derived_message_id,
    utcnow,
)
from handrail.patch import diff
from handrail.tools import ToolSpec

#: Halts a person cannot usefully overrule: an operator decided it, or the task's wall clock ran out.
NOT_REVIEWED_HALTS = frozenset({"halted_by_operator", "deadline_exceeded"})
#: Halts a person sees whatever the agent's autonomy: a tool observation that matched a deny pattern
#: (a suspected prompt injection) is exactly what no agent should wave through on its own.
ALWAYS_REVIEWED_HALTS = frozenset({"observation_denied"})
#: A step people have sent back this many times that halts again ends ``halted``: approving once
#: more cannot lift what stops it (an exhausted budget, a loop window), and a task must not go
#: round between its agent and the review queue for ever.
MAX_HALT_REVIEWS = 3


@dataclass(frozen=True)
class Escalation:
    """Why a step needs a person, and the policy of its review."""

    trigger: ReviewTrigger
    reason: str
    policy: ReviewPolicy
    rule: EscalationRule | None = None


def escalation_for(
    step: StepCompleted, workflow: WorkflowSpec, agent: AgentSpec | None, level: Autonomy | None = None
) -> Escalation | None:
    """The first reason ``step`` needs a person (rules first, in order), or None when it may move on.

    ``level`` is the agent's effective autonomy in the workflow (``handrail.autonomy``);
    None: its level in agents.yaml.

    A rule that cannot be evaluated (a missing field, a type error) fails closed:
    a person decides. Calls that need approval were approved before they ran
    (``approval_for_call``): a finished step is not sent back for them.
    """
    scope = {"output": step.output, "context": step.context}
    for rule in workflow.rules_for(step.step):
        try:
            held = evaluate(rule.when, scope)
        except ExpressionError as exc:
            reason = f"rule {rule.name!r} could not be evaluated, so a person decides: {exc}"
            return Escalation(ReviewTrigger.RULE, reason, rule, rule)
        if held:
            return Escalation(ReviewTrigger.RULE, rule.reason, rule, rule)
    if agent is None:
        return None
    confidence = _confidence(step)
    if confidence is not None and confidence < agent.confidence_floor:
        reason = f"confidence {confidence:.2f} is below agent {agent.name}'s floor {agent.confidence_floor:.2f}"
        return Escalation(ReviewTrigger.LOW_CONFIDENCE, reason, workflow.review)
    if (level or agent.autonomy) == Autonomy.APPROVAL_GATES:
        reason = f"agent {agent.name} runs on approval gates: a person approves every step"
        return Escalation(ReviewTrigger.APPROVAL_GATE, reason, workflow.review)
    return None


def approval_for_call(
    workflow: WorkflowSpec | None,
    agent: AgentSpec,
    step: str,
    tool: ToolSpec,
    args: dict[str, Any],
    context: dict[str, Any],
    level: Autonomy | None = None,
) -> Escalation | None:
    """Why a person must approve this call before it runs (rules bound to the tool first), or None.

    ``level``: the agent's effective autonomy in the workflow; None: its level in agents.yaml.

    A rule over ``args`` and ``context`` that cannot be evaluated fails closed. The policy
    here is only what the worker reports; the validator parks the call under the named rule's.
    """
    scope = {"args": args, "context": context}
    review = workflow.review if workflow is not None else ReviewPolicy()
    for rule in workflow.rules_before(step, tool.name) if workflow is not None else []:
        try:
            held = evaluate(rule.when, scope)
        except ExpressionError as exc:
            reason = f"rule {rule.name!r} could not be evaluated, so a person decides: {exc}"
            return Escalation(ReviewTrigger.RULE, reason, rule, rule)
        if held:
            return Escalation(ReviewTrigger.RULE, rule.reason, rule, rule)
    if tool.requires_approval:
        return Escalation(ReviewTrigger.TOOL_APPROVAL, f"{tool.name} is flagged: a person approves each call", review)
    if tool.side_effect and (level or agent.autonomy) == Autonomy.APPROVAL_GATES:
        reason = f"agent {agent.name} runs on approval gates: a person approves each side effect before it runs"
        return Escalation(ReviewTrigger.APPROVAL_GATE, reason, review)
    return None


#: Where a step's evaluation travels in the task context: ``evaluations.<step>``.
EVALUATIONS = "evaluations"


@dataclass(frozen=True)
class Evaluation:
    """How a step's output fared against its schema and its evaluator: what is wrong with it, by kind.

    ``iteration`` is the run of the step the output is from (1: the first).
    """

    iteration: int
    broken: tuple[str, ...] = ()  # the output breaks the step's output_schema
    critique: tuple[str, ...] = ()  # the evaluator's schema and rules

    @property
    def passed(self) -> bool:
        return not self.broken and not self.critique

    @property
    def lines(self) -> list[str]:
        """Everything the step's agent is told, schema problems first."""
        return [*self.broken, *self.critique]


def iteration_of(step: StepCompleted) -> int:
    """Which run of its step ``step`` is (1: the first; more after an evaluator sent it back)."""
    found = step.context.get(EVALUATIONS, {})
    entry = found.get(step.step) if isinstance(found, dict) else None
    iteration = entry.get("iteration") if isinstance(entry, dict) else None
    return iteration if isinstance(iteration, int) and iteration >= 1 else 1


def evaluate_output(step: StepCompleted, spec: StepSpec) -> Evaluation:
    """Check ``step``'s output: its ``output_schema``, then, when it holds, the step's evaluator (schema, then
    rules in order).

    A rule that cannot be evaluated (a missing field, a type error) fails closed: its critique is
    the error, so the agent hears what is missing.
    """
    broken = documents.problems(spec.output_schema, step.output, "output")
    evaluator = spec.evaluator
    critique: list[str] = []
    if evaluator is not None and not broken:  # the rules are written for outputs their step's schema allows
        if evaluator.schema_ is not None:
            critique += documents.problems(evaluator.schema_, step.output, "output")
        scope = {"output": step.output, "context": step.context}
        for rule in evaluator.rules:
            try:
                held = evaluate(rule.require, scope)
            except ExpressionError as exc:
                critique.append(f"{rule.name}: {rule.critique} (the rule could not be evaluated: {exc})")
                continue
            if not held:
                critique.append(f"{rule.name}: {rule.critique}")
    return Evaluation(iteration_of(step), tuple(broken), tuple(critique))


def verdict_of(report: StepCompleted, judged: StepCompleted) -> Evaluation:
    """An evaluator agent's verdict (``report``: its answer met VERDICT_SCHEMA) on ``judged``
    (``judged_step``: the output of the step it judged, that step's run)."""
    if report.output.get("passed") is True:
        return Evaluation(iteration_of(judged))
    critique = report.output.get("critique")
    lines = [critique] if isinstance(critique, str) else list(critique or [])
    return Evaluation(iteration_of(judged), critique=tuple(lines or [f"agent {report.agent} did not pass the output"]))


def judged_step(report: StepCompleted, generator: StepSpec) -> StepCompleted:
    """An evaluation hop's report standing for the step it judged: that step's name, agent and output, on the
    hop's hash (the committed head), so the task moves on, iterates or parks from there."""
    output = report.context.get("steps", {}).get(generator.name, {})
    update = {"step": generator.name, "agent": generator.agent, "output": output, "confidence": None}
    return report.model_copy(update=update)


@dataclass(frozen=True)
class Tally:
    """How a vote's samples came out: the most common answer, how many gave it, and whether they agree."""

    answer: dict[str, Any]
    agreed: int
    samples: int
    distinct: int
    passed: bool
    rule: str

    def describe(self) -> dict[str, Any]:
        return {
            "agreed": self.agreed, "samples": self.samples, "distinct": self.distinct, "passed": self.passed,
            "rule": self.rule,
        }  # fmt: skip

    @property
    def why(self) -> str:
        return (
            f"{self.agreed} of {self.samples} samples gave the most common answer "
            f"({self.distinct} distinct answers; {self.rule})"
        )


def tally(vote: VoteSpec, outputs: list[dict[str, Any]], context: dict[str, Any]) -> Tally:
    """Decide a vote from its samples' answers (in sample order) by its ``aggregate``.

    Answers are the same when their canonical JSON is; a tie for the most common goes to the earliest
    sample. A CEL expression that cannot be evaluated is a disagreement (fail closed).
    """
    counts: dict[bytes, int] = {}
    first: dict[bytes, dict[str, Any]] = {}
    for output in outputs:
        key = canonical_json(output)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, output)
    best = max(counts, key=lambda k: counts[k])  # max keeps the first of equals: the earliest sample's
    agreed = counts[best]
    aggregate = vote.aggregate
    if aggregate == Aggregate.MAJORITY:
        passed, rule = agreed >= vote.needed, f"majority of {vote.needed}"
    elif aggregate == Aggregate.UNANIMOUS:
        passed, rule = agreed == len(outputs), "unanimous"
    else:
        try:
            passed, rule = evaluate(aggregate, {"samples": outputs, "context": context}), aggregate
        except ExpressionError as exc:
            passed, rule = False, f"{aggregate} could not be evaluated: {exc}"
    return Tally(first[best], agreed, len(outputs), len(counts), passed, rule)


def plan_problems(plan: dict[str, Any], spec: StepSpec, remaining_steps: int | None) -> list[str]:
    """What is wrong with an orchestrating step's plan: its shape (PLAN_SCHEMA), a subtask named twice, an
    agent outside the step's ``workers``, more subtasks than ``max_subtasks`` or than the budget has steps
    left for (``remaining_steps``: None when it has no cap). The agent is told these and tries again."""
    found = documents.problems(PLAN_SCHEMA, plan, "plan")
    if found:
        return found
    subtasks = plan["subtasks"]
    names = [s["name"] for s in subtasks]
    if len(set(names)) != len(names):
        found.append(f"plan/subtasks: names repeat ({sorted({n for n in names if names.count(n) > 1})})")
    for i, subtask in enumerate(subtasks):
        if subtask["agent"] not in spec.workers:
            found.append(
                f"plan/subtasks/{i}/agent: {subtask['agent']!r} is not one of this step's workers {spec.workers}"
            )
    if len(subtasks) > spec.max_subtasks:
        found.append(f"plan/subtasks: {len(subtasks)} subtasks, more than this step's max_subtasks {spec.max_subtasks}")
    if remaining_steps is not None and len(subtasks) > remaining_steps:
        found.append(
            f"plan/subtasks: {len(subtasks)} subtasks, but the task's budget has {max(remaining_steps, 0)} steps left"
        )
    return found


def remaining_steps(budget: BudgetSnapshot) -> int | None:
    """The steps a task's budget has left after the step that sees ``budget`` (None: no cap)."""
    return None if budget.max_steps is None else budget.max_steps - budget.steps_used - 1


def _confidence(step: StepCompleted) -> float | None:
    """The model's reported confidence, else the output's own top-level ``confidence`` number."""
    if step.confidence is not None:
        return step.confidence
    value = step.output.get("confidence")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def review_id_for(checkpoint_message_id: str) -> str:
    """The review of a checkpoint: one per checkpoint, whoever asks and however often."""
    return derived_message_id(checkpoint_message_id, "review")


def deadline_after(now: datetime, timeout_s: float) -> datetime:
    return now + timedelta(seconds=timeout_s)


@dataclass(frozen=True)
class Orchestrator:
    """Decides how tasks move on from checkpoints; ``service`` is the sender it signs handoffs as."""

    service: str
    contracts: Contracts

    def advance(
        self,
        step: StepCompleted,
        *,
        context: dict[str, Any] | None = None,
        output: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> HandOff | Fork | End:
        """Hand the next step on from ``step`` (with ``context`` when a reviewer edited it), fork into the
        branches of a parallel next step, or end the task.

        The handoff's ``parent_hash`` is the checkpoint's hash, the task's committed
        head; an edited context travels with its own new ``context_hash``. The
        receiving agent audits the handoff; the end of the task is audited where it is applied.
        """
        workflow = self.contracts.workflows[step.workflow]
        following = workflow.next_step(step.step)
        new_context = step.context if context is None else context
        new_hash = step.context_hash if context is None else context_hash(new_context)
        if following is not None and following.branches is not None:
            base = (
                step if context is None else step.model_copy(update={"context": new_context, "context_hash": new_hash})
            )
            branches = {name: branch.agent for name, branch in following.branches.items()}
            point, handoffs = branch_handoffs(base, parallel=following.name, branches=branches, sender=self.service)
            return Fork(point, handoffs, actor=f"service:{self.service}")
        if following is not None:
            return HandOff(
                next_handoff(
                    step,
                    to_step=following.name,
                    agent=following.agents[0],
                    sender=self.service,
                    context=new_context,
                    hash_=new_hash,
                )
            )
        return End.of(
            step,
            TaskStatus.COMPLETED,
            actor=actor or f"service:{self.service}",
            output=step.output if output is None else output,
            context_hash=new_hash,
        )

    def join(
        self, report: StepCompleted, point: ForkPoint, entries: dict[str, str], tally: Tally | None = None
    ) -> Join:
        """Join the branches of ``point``'s parallel step, all in (``entries``: per branch, its JSON entry of
        ``TaskStore.branch_done``; ``report`` is the branch report that completed them), and carry on from
        the joined step as from any accepted step. A vote's joined output is its ``tally``'s answer."""
        found = {name: json.loads(entry) for name, entry in sorted(entries.items())}
        # The branches that failed, of a step that goes on without them, give no output (the record names them).
        outputs = {name: entry["output"] for name, entry in found.items() if "failed" not in entry}
        budgets = [BudgetSnapshot.model_validate(entry["budget"]) for entry in found.values()]
        agent = str(next(iter(found.values())).get("agent", report.agent))
        output = outputs if tally is None else tally.answer
        joined = joined_step(report, point, output, budgets, agent)
        parents = {name: str(entry["head"]) for name, entry in found.items()}
        details: dict[str, Any] = {} if tally is None else {"vote": tally.describe()}
        if failed := {name: entry["failed"] for name, entry in found.items() if "failed" in entry}:
            details["failed"] = failed
        actor = f"service:{self.service}"
        return Join(joined, point, parents, then=self.advance(joined), actor=actor, details=details)

    def dispatch(self, step: StepCompleted, spec: StepSpec) -> Fork:
        """Fork an orchestrating step's plan (checked: ``plan_problems``) into its subtasks: the hops
        ``<step>.<subtask>`` on the agents the plan names, each with its input under ``subtask``."""
        subtasks = step.output["subtasks"]
        branches = {s["name"]: s["agent"] for s in subtasks}
        inputs = {s["name"]: s["input"] for s in subtasks}
        point, handoffs = branch_handoffs(
            step, parallel=spec.name, branches=branches, sender=self.service, inputs=inputs
        )
        return Fork(point, handoffs, actor=f"service:{self.service}")

    def evaluate(self, step: StepCompleted, spec: StepSpec) -> HandOff:
        """Hand ``step``'s output to its evaluator agent: the hop ``<step>.evaluation``, on ``step``'s hash."""
        assert spec.evaluator is not None
        assert spec.evaluator.agent is not None
        hop = next_handoff(
            step,
            to_step=f"{step.step}{EVALUATION_HOP}",
            agent=spec.evaluator.agent,
            sender=self.service,
            context=step.context,
            hash_=step.context_hash,
        )
        return HandOff(hop)

    def iterate(self, step: StepCompleted, evaluation: Evaluation, spec: StepSpec) -> Iterate:
        """Run ``step``'s step again from its report, told what was wrong: the critique under
        ``evaluations.<step>`` of the context, the last output still under ``steps.<step>``."""
        assert spec.evaluator is not None, "only a step with an evaluator is iterated"
        evaluations = step.context.get(EVALUATIONS)
        evaluations = dict(evaluations) if isinstance(evaluations, dict) else {}
        following = evaluation.iteration + 1
        evaluations[step.step] = {"iteration": following, "critique": evaluation.lines}
        context = {**step.context, EVALUATIONS: evaluations}
        handoff = iteration_handoff(
            step, agent=spec.agents[0], sender=self.service, context=context, iteration=following
        )
        return Iterate(
            HandOff(handoff),
            iteration=following,
            max_iterations=spec.evaluator.max_iterations,
            critique=tuple(evaluation.lines),
            actor=f"service:{self.service}",
            patch=diff(step.context, context),
        )

    def retry(
        self,
        halted: HandoffEnvelope,
        *,
        message_id: str,
        context: dict[str, Any] | None = None,
        resume: StepResume | None = None,
    ) -> HandOff:
        """Hand a halted step to its agent again, from the same head (``attempt`` + 1); with ``resume``,
        the step carries on from where it stopped for a proposed call."""
        handoff = retry_handoff(halted, message_id=message_id, sender=self.service, context=context)
        return HandOff(handoff if resume is None else handoff.model_copy(update={"resume": resume}))

    def request_review(
        self,
        escalation: Escalation,
        *,
        checkpoint: StepCompleted | None = None,
        halted: HandoffEnvelope | None = None,
        halt_error_type: str | None = None,
        proposal: ProposedCall | None = None,
        progress: StepProgress | None = None,
    ) -> Park:
        """Park the task: its review request, with the whole checkpoint (and the call it waits on, if any)."""
        source: StepCompleted | HandoffEnvelope
        if checkpoint is not None:
            source, agent = checkpoint, checkpoint.agent
        else:
            assert halted is not None, "a review needs a checkpoint or a halted handoff"
            source, agent = halted, halted.receiver
        now = utcnow()
        review_id = review_id_for(source.message_id)
        policy, rule = escalation.policy, escalation.rule
        request = ReviewRequested(
            message_id=derived_message_id(review_id, "requested/0"),
            review_id=review_id,
            task_id=source.task_id,
            workflow=source.workflow,
            step=source.step,
            step_index=source.step_index,
            agent=agent,
            reason=escalation.reason,
            trigger=escalation.trigger,
            rule=rule.name if rule is not None else None,
            expression=rule.when if rule is not None else None,
            role=policy.role,
            approvals_required=policy.approvals_required,
            timeout_s=policy.timeout_s,
            default_action=policy.default_action.value,
            context_hash=source.context_hash,
            checkpoint=checkpoint,
            halted=halted,
            halt_error_type=halt_error_type,
            proposal=proposal,
            progress=progress,
            requested_at=now,
            deadline=deadline_after(now, policy.timeout_s),
        )
        return Park(request, actor=f"service:{self.service}")

    def request_approval(self, step: StepCompleted) -> Park:
        """Park a step that stopped before a call a person must approve: the proposal, with the step's progress.

        The review's policy is that of the rule the worker found held (the workflow's default
        review policy when no rule did, or when the rule is gone from the config since).
        """
        proposal, progress = step.proposal, step.progress
        assert proposal is not None, "an awaiting_approval step carries its proposal"
        assert progress is not None, "and its progress"
        workflow = self.contracts.workflows[step.workflow]
        rule = next((r for r in workflow.escalations if r.name == proposal.rule), None)
        policy = workflow.review if rule is None else rule
        escalation = Escalation(ReviewTrigger(proposal.trigger), proposal.why, policy, rule)
        handoff = halted_handoff(step, sender=self.service)
        return self.request_review(escalation, halted=handoff, proposal=proposal, progress=progress)

    def review_halt(self, halt: TaskHalted, handoff: HandoffEnvelope, level: Autonomy | None = None) -> Park | None:
        """Park a halted task for a person when its agent's autonomy asks for one; None to end it ``halted``.

        ``level``: the agent's effective autonomy in the workflow; None: its level in agents.yaml.

        Agents on approval gates or exception-based autonomy send halts from budgets,
        loops, breakers and corrections to a person; audit-based agents do not, except for
        ``ALWAYS_REVIEWED_HALTS`` (an observation that matched a deny pattern). Operator
        halts are never reviewed, nor a run-out wall clock unless the workflow's ``max_top_up``
        grants wall clock, nor a step that halts again after ``MAX_HALT_REVIEWS`` people sent it back.
        """
        agent = self.contracts.agents.get(handoff.receiver)
        workflow = self.contracts.workflows.get(handoff.workflow)
        if agent is None or workflow is None:
            return None
        if (level or agent.autonomy) == Autonomy.AUDIT_BASED and halt.error_type not in ALWAYS_REVIEWED_HALTS:
            return None
        if halt.error_type in NOT_REVIEWED_HALTS or handoff.attempt > MAX_HALT_REVIEWS:
            # A run-out wall clock is worth a person's time only where approving can grant more of it.
            more_time = workflow.max_top_up is not None and workflow.max_top_up.wall_clock_s > 0
            if not (halt.error_type == "deadline_exceeded" and more_time and handoff.attempt <= MAX_HALT_REVIEWS):
                return None
        escalation = Escalation(ReviewTrigger.HALT, f"{halt.error_type}: {halt.reason}", workflow.review)
        return self.request_review(escalation, halted=handoff, halt_error_type=halt.error_type)
