"""Evaluator-optimizer, decided without a bus: what an evaluator finds wrong with an output, and the run of the
step it sends back (its context, its hash chain, its audit record)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from tests.libs.test_orchestration import CONFIG

from handrail.context.views import view_for
from handrail.contracts import EvaluatorSpec, StepSpec, WorkflowSpec, load_contracts
from handrail.hashing import context_hash
from handrail.lifecycle import HandOff, Iterate
from handrail.messages import HandoffEnvelope, StepCompleted, utcnow
from handrail.orchestration import Orchestrator, evaluate_output, iteration_of
from handrail.patch import apply
from handrail.tools import default_registry

CONTRACTS = load_contracts(CONFIG, default_registry().names())

EVALUATOR = {
    "schema": {"type": "object", "properties": {"summary": {"minLength": 20}}},
    "rules": [
        {"name": "cites", "require": "output.summary.contains('[1]')", "critique": "cite a source as [1]"},
        {"name": "scored", "require": "output.score >= 0.5", "critique": "score it at least 0.5"},
    ],
    "max_iterations": 3,
}
STEP = StepSpec.model_validate(
    {
        "name": "write",
        "agent": "expense-intake",
        "output_schema": {"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}},
        "evaluator": EVALUATOR,
    }
)


def report(output: dict[str, Any], context: dict[str, Any] | None = None) -> StepCompleted:
    context = {"input": {"topic": "x"}, **(context or {}), "steps": {"write": output}}
    return StepCompleted(
        message_id="m-1",
        task_id="t-1",
        workflow="expense-approval",
        step="write",
        step_index=0,
        attempt=1,
        agent="expense-intake",
        goal="write",
        output=output,
        context=context,
        context_hash=context_hash(context),
        parent_hash="0" * 64,
        patch=[],
        finished_at=utcnow(),
    )


def test_an_output_that_meets_its_schema_and_every_rule_passes() -> None:
    evaluation = evaluate_output(report({"summary": "a long enough summary [1]", "score": 0.9}), STEP)
    assert evaluation.passed and evaluation.iteration == 1 and evaluation.lines == []


def test_every_failure_is_a_line_of_the_critique_schema_problems_first() -> None:
    evaluation = evaluate_output(report({"summary": "short", "score": 0.1}), STEP)
    assert not evaluation.passed and evaluation.broken == ()
    assert evaluation.critique == (
        "output/summary: 'short' is too short",
        "cites: cite a source as [1]",
        "scored: score it at least 0.5",
    )


def test_a_broken_output_schema_is_the_whole_critique() -> None:
    evaluation = evaluate_output(report({"score": 0.9}), STEP)
    assert evaluation.broken == ("output: 'summary' is a required property",) and evaluation.critique == ()
    assert evaluation.lines == ["output: 'summary' is a required property"]


def test_a_rule_that_cannot_be_evaluated_fails_and_says_why() -> None:
    evaluation = evaluate_output(report({"summary": "a long enough summary [1]"}), STEP)
    (line,) = evaluation.critique
    assert line.startswith("scored: score it at least 0.5 (the rule could not be evaluated: 'output.score >= 0.5'")


def test_the_step_runs_again_from_its_report_told_what_was_wrong() -> None:
    step = report({"summary": "short", "score": 0.1})
    evaluation = evaluate_output(step, STEP)
    iterate = Orchestrator("validator", CONTRACTS).iterate(step, evaluation, STEP)
    assert isinstance(iterate, Iterate) and isinstance(iterate.handoff, HandOff)
    handoff = iterate.handoff.message
    assert isinstance(handoff, HandoffEnvelope)
    assert (handoff.step, handoff.receiver, handoff.step_index) == ("write", "expense-intake", 1)
    # Chained on the report's hash (the committed head), with the critique in the context it hashes.
    assert handoff.parent_hash == step.context_hash
    assert handoff.context["evaluations"]["write"] == {"iteration": 2, "critique": list(evaluation.lines)}
    assert handoff.context["steps"]["write"] == step.output, "the last output stays for the agent to improve"
    assert handoff.context_hash == context_hash(handoff.context)
    assert apply(step.context, iterate.patch) == handoff.context
    assert (iterate.iteration, iterate.max_iterations) == (2, 3)
    # The same report sends the same handoff (a redelivery publishes nothing new).
    again = Orchestrator("validator", CONTRACTS).iterate(step, evaluation, STEP).handoff.message
    assert again.message_id == handoff.message_id and again.idempotency_key == handoff.idempotency_key
    # The next run's report knows which run it is.
    assert iteration_of(report({"summary": "s"}, {"evaluations": handoff.context["evaluations"]})) == 2


def test_an_evaluator_needs_something_to_judge_by_and_a_sane_iteration_count() -> None:
    with pytest.raises(ValidationError, match="needs an `agent`, a `schema` or `rules`"):
        EvaluatorSpec.model_validate({"max_iterations": 2})
    with pytest.raises(ValidationError, match="max_iterations"):
        EvaluatorSpec.model_validate({**EVALUATOR, "max_iterations": 0})
    with pytest.raises(ValidationError, match="not a valid CEL expression"):
        EvaluatorSpec.model_validate({"rules": [{"name": "bad", "require": "output.(", "critique": "x"}]})


def test_a_step_with_a_view_is_shown_its_evaluation_and_its_last_output() -> None:
    workflow = WorkflowSpec.model_validate(
        {
            "name": "w",
            "goal": "g",
            "input_schema": {"type": "object"},
            "steps": [{**STEP.model_dump(by_alias=True), "context_view": ["/input/topic"]}],
        }
    )
    context = {"input": {"topic": "x", "secret": 1}, "steps": {"write": {"summary": "s"}}, "evaluations": {"write": 2}}
    view = view_for(workflow, "write", context)
    assert view.context == {"input": {"topic": "x"}, "steps": {"write": {"summary": "s"}}, "evaluations": {"write": 2}}
