"""Deterministic orchestration: check a ``StepCompleted`` and decide what happens next.

The step's output must satisfy its schema (else it is dead-lettered and the task
fails). A step with an evaluator is judged too, and when its output fails, the
step runs again with the critique, up to its ``max_iterations`` runs; then the task
fails or a person decides, per its ``on_exhausted``. Then, when a person must
decide (an escalation rule holds, the confidence is below the agent's floor, or
the agent runs on approval gates), the task is
parked on ``reviews.requested`` with its checkpoint; otherwise it moves on: the
next step, or its result. A step its agent stopped before a call that needs
approval is parked with the proposed call, before anything ran.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from prometheus_client import Counter

from handrail.bus import Delivery
from handrail.contracts import Autonomy, Exhausted, StepSpec, WorkflowSpec, documents
from handrail.contracts.workflows import VERDICT_SCHEMA, BranchFailure
from handrail.errors import StepFailed, TaskHalted
from handrail.lifecycle import End, Plan, halted_handoff
from handrail.messages import ReviewTrigger, StepCompleted, TaskStatus
from handrail.metrics import BRANCHES, VOTES, labels
from handrail.orchestration import (
    Escalation,
    Evaluation,
    Orchestrator,
    escalation_for,
    evaluate_output,
    judged_step,
    plan_problems,
    remaining_steps,
    tally,
    verdict_of,
)
from handrail.service import Runtime

log = logging.getLogger(__name__)

SERVICE = "validator"

ESCALATIONS = Counter(
    "handrail_escalations_total", "Steps sent to human review, by workflow and trigger.", ["workflow", "trigger"]
)
EVALUATIONS = Counter(
    "handrail_evaluations_total",
    "Outputs of steps with an evaluator judged, by workflow, step and verdict "
    "(passed; iterated: the step runs again; exhausted: no runs left).",
    ["workflow", "step", "verdict"],
)


class OutputRejected(StepFailed):
    """The step's output does not satisfy the step's output schema."""

    error_type = "output_schema_violation"


class PlanRejected(StepFailed):
    """An orchestrating step's plan breaks its rules (its agent was told, and answered one anyway)."""

    error_type = "plan_rejected"


class ValidatorHandlers:
    """The validator's handler, bound to its runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.orchestrator = Orchestrator(SERVICE, runtime.contracts)

    async def on_step(self, step: StepCompleted, delivery: Delivery) -> Plan:
        """Check the output, then park the task for review, hand the next step on, or end the task."""
        if step.status == "awaiting_approval":
            return self._awaiting_approval(step)
        if (tolerated := self._tolerated_failure(step)) is not None:
            return await self._branch_done(step, tolerated[0], tolerated[1], failed=tolerated[2])
        if step.status != "completed":
            return await self._not_completed(step)
        workflow = self.rt.contracts.workflows.get(step.workflow)
        spec = workflow.hop(step.step) if workflow is not None else None
        if workflow is None or spec is None:
            raise StepFailed(f"workflow {step.workflow!r} has no step {step.step!r}", task_id=step.task_id)
        generator = workflow.generator_of(step.step)
        if generator is not None:  # an evaluator agent's verdict on the output of ``generator``
            if broken := documents.problems(VERDICT_SCHEMA, step.output, "output"):
                raise OutputRejected(
                    f"evaluator {step.agent!r} of step {generator.name!r} of task {step.task_id} answered with "
                    f"no verdict: {documents.summary(broken)}",
                    task_id=step.task_id,
                )
            report, step, spec = step, judged_step(step, generator), generator
            if (judged := self._judged(step, spec, workflow, verdict_of(report, step))) is not None:
                return judged
        elif spec.evaluator is not None:
            evaluation = evaluate_output(step, spec)
            if evaluation.passed and spec.evaluator.agent is not None:
                return self.orchestrator.evaluate(step, spec)  # the schema and rules passed: the agent judges
            if (judged := self._judged(step, spec, workflow, evaluation)) is not None:
                return judged
        elif (evaluation := evaluate_output(step, spec)).broken:
            raise OutputRejected(
                f"step {step.step!r} of task {step.task_id} produced an output that breaks its schema: "
                f"{documents.summary(list(evaluation.broken))}",
                task_id=step.task_id,
            )
        fork = workflow.fork_of(step.step)
        if fork is not None:
            return await self._branch_done(step, fork, workflow)
        if spec.orchestrates:  # its output is a plan: checked again here, then its subtasks run
            if problems := plan_problems(step.output, spec, remaining_steps(step.budget)):
                raise PlanRejected(
                    f"the plan of step {step.step!r} of task {step.task_id} cannot run: {documents.summary(problems)}",
                    task_id=step.task_id,
                )
            return self.orchestrator.dispatch(step, spec)
        agent = self.rt.contracts.agents.get(step.agent)
        escalation = escalation_for(step, workflow, agent, await self._level(step) if agent else None)
        if escalation is not None:
            park = self.orchestrator.request_review(escalation, checkpoint=step)
            ESCALATIONS.labels(labels.workflow(step.workflow), escalation.trigger.value).inc()
            log.info(
                "task %s: step %r parked for review %s (%s, role %s)",
                step.task_id,
                step.step,
                park.request.review_id,
                escalation.trigger.value,
                escalation.policy.role,
            )
            return park
        return self.orchestrator.advance(step)

    def _tolerated_failure(self, step: StepCompleted) -> tuple[StepSpec, WorkflowSpec, str] | None:
        """A branch that failed, halted or broke its schema, of a parallel step that goes on without it
        (``on_branch_failure`` quorum or review): its step, workflow and why; None for anything else."""
        workflow = self.rt.contracts.workflows.get(step.workflow)
        fork = workflow.fork_of(step.step) if workflow is not None else None
        if workflow is None or fork is None or fork.on_branch_failure == BranchFailure.FAIL:
            return None
        if step.status != "completed":
            return fork, workflow, step.reason or f"branch {step.step!r} {step.status}"
        spec = workflow.hop(step.step)
        broken = documents.problems(spec.output_schema, step.output, "output") if spec is not None else []
        return (fork, workflow, f"its output breaks its schema: {documents.summary(broken)}") if broken else None

    async def _branch_done(
        self, step: StepCompleted, fork: StepSpec, workflow: WorkflowSpec, failed: str | None = None
    ) -> Plan:
        """A branch of a parallel step is in (or ``failed``, for a step that goes on without it): nothing
        more until all are; the last one in joins them (once: every id of the join is derived from the fork),
        and the joined step moves on like any other, after the escalation rules of the parallel step."""
        point = step.fork
        if point is None or point.step != fork.name:
            raise StepFailed(
                f"the report of branch {step.step!r} of task {step.task_id} does not say which fork it left from",
                task_id=step.task_id,
            )
        branch = step.step.split(".", 1)[1]
        branches = point.branches or fork.branches or {}
        if point.branches and point.branches.get(branch) != step.agent:
            raise StepFailed(
                f"branch {step.step!r} of task {step.task_id} was handed to {point.branches.get(branch)!r}, "
                f"not to {step.agent!r}",
                task_id=step.task_id,
            )
        entry = {
            "head": step.context_hash,
            "output": step.output,
            "agent": step.agent,
            "budget": step.budget.model_dump(mode="json"),
            **({"failed": failed} if failed is not None else {}),
        }
        entries = await self.rt.store.branch_done(step.task_id, fork.name, branch, json.dumps(entry), len(branches))
        name = labels.workflow(step.workflow)
        BRANCHES.labels(name, fork.name, "done").inc()
        if entries is None:
            return None
        counted = None
        if fork.vote is not None:
            answers = [json.loads(entries[f"sample-{i}"])["output"] for i in range(1, fork.vote.samples + 1)]
            counted = tally(fork.vote, answers, step.context)
            VOTES.labels(name, fork.name, "agreed" if counted.passed else "disagreed").inc()
            reason = f"the samples of vote {fork.name!r} do not agree: {counted.why}"
            if not counted.passed and fork.vote.on_disagreement == Exhausted.FAIL:
                return End.of(
                    step, TaskStatus.FAILED, actor=f"service:{SERVICE}", reason=reason, error_type="vote_disagreement"
                )
        lost = {
            b: str(e["failed"]) for b, e in ((b, json.loads(v)) for b, v in sorted(entries.items())) if "failed" in e
        }
        if lost:
            BRANCHES.labels(name, fork.name, "failed").inc(len(lost))
            why = "; ".join(f"{b}: {r}" for b, r in lost.items())
            succeeded = len(entries) - len(lost)
            if fork.on_branch_failure == BranchFailure.QUORUM and succeeded < (fork.quorum or 0):
                return End.of(
                    step, TaskStatus.FAILED, actor=f"service:{SERVICE}", error_type="branch_quorum_missed",
                    reason=f"{succeeded} of {len(entries)} branches of step {fork.name!r} succeeded, short of its "
                    f"quorum {fork.quorum}: {why}",
                )  # fmt: skip
        join = self.orchestrator.join(step, point, entries, counted)
        if counted is not None and not counted.passed:  # to a person, on the most common answer
            escalation: Escalation | None = Escalation(ReviewTrigger.VOTE, reason, workflow.review)
        elif lost and fork.on_branch_failure == BranchFailure.REVIEW:  # to a person, on what the others gave
            reason = f"{len(lost)} of {len(entries)} branches of step {fork.name!r} failed: {why}"
            escalation = Escalation(ReviewTrigger.BRANCH_FAILURE, reason, workflow.review)
        else:
            escalation = escalation_for(join.joined, workflow, None)
        if escalation is not None:
            ESCALATIONS.labels(name, escalation.trigger.value).inc()
            return replace(join, then=self.orchestrator.request_review(escalation, checkpoint=join.joined))
        return join

    def _judged(self, step: StepCompleted, spec: StepSpec, workflow: WorkflowSpec, evaluation: Evaluation) -> Plan:
        """What an evaluator's verdict does to the task: nothing (None: it passed, the step moves on), another
        run with the critique, or, with no runs left, the end of the task or a person's decision."""
        evaluator = spec.evaluator
        assert evaluator is not None
        name = labels.workflow(step.workflow)
        if evaluation.passed:
            EVALUATIONS.labels(name, step.step, "passed").inc()
            return None
        if evaluation.iteration < evaluator.max_iterations:
            EVALUATIONS.labels(name, step.step, "iterated").inc()
            log.info(
                "task %s: step %r run %d of %d failed its evaluation; it runs again",
                step.task_id, step.step, evaluation.iteration, evaluator.max_iterations,
            )  # fmt: skip
            return self.orchestrator.iterate(step, evaluation, spec)
        EVALUATIONS.labels(name, step.step, "exhausted").inc()
        runs = f"after {evaluation.iteration} run(s)"
        if evaluation.broken:  # a person cannot approve an output its step's contract rules out
            raise OutputRejected(
                f"step {step.step!r} of task {step.task_id} produced an output that breaks its schema {runs}: "
                f"{documents.summary(list(evaluation.broken))}",
                task_id=step.task_id,
            )
        reason = f"step {step.step!r} failed its evaluation {runs}: {documents.summary(list(evaluation.critique))}"
        if evaluator.on_exhausted == Exhausted.REVIEW:
            escalation = Escalation(ReviewTrigger.EVALUATION, reason, workflow.review)
            ESCALATIONS.labels(name, escalation.trigger.value).inc()
            return self.orchestrator.request_review(escalation, checkpoint=step)
        return End.of(
            step, TaskStatus.FAILED, actor=f"service:{SERVICE}", reason=reason, error_type="evaluation_exhausted"
        )

    def _awaiting_approval(self, step: StepCompleted) -> Plan:
        """A step stopped before a call a person must approve: park it with the proposal, nothing has run."""
        if step.proposal is None or step.progress is None or step.workflow not in self.rt.contracts.workflows:
            raise StepFailed(
                f"step {step.step!r} of task {step.task_id} awaits approval but carries no proposal and progress, "
                f"or its workflow {step.workflow!r} is unknown",
                task_id=step.task_id,
            )
        park = self.orchestrator.request_approval(step)
        ESCALATIONS.labels(labels.workflow(step.workflow), park.request.trigger.value).inc()
        log.info(
            "task %s: call to %s in step %r parked for approval, review %s (role %s)",
            step.task_id, step.proposal.tool, step.step, park.request.review_id, park.request.role,
        )  # fmt: skip
        return park

    async def _level(self, step: StepCompleted) -> Autonomy:
        """The effective autonomy of the step's agent in its workflow (agents.yaml's, or an override)."""
        return await self.rt.autonomy.level(step.agent, step.workflow)

    async def _not_completed(self, step: StepCompleted) -> Plan:
        """A step its agent reported halted (maybe for a person, per its autonomy) or failed: the task ends."""
        reason = step.reason or f"step {step.step!r} {step.status}"
        error_type = step.error_type or step.status
        if step.status == "halted":
            halt = TaskHalted(reason, error_type=error_type, task_id=step.task_id)
            level = await self._level(step) if step.agent in self.rt.contracts.agents else None
            park = self.orchestrator.review_halt(halt, halted_handoff(step, sender=SERVICE), level)
            if park is not None:
                ESCALATIONS.labels(labels.workflow(step.workflow), "halt").inc()
                return park
        status = TaskStatus.HALTED if step.status == "halted" else TaskStatus.FAILED
        return End.of(step, status, actor=f"service:{SERVICE}", reason=reason, error_type=error_type)
