"""Parallel steps without a bus: how they are declared, which hop is which, the fork's handoffs, and the check
``audit verify`` makes of a join."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError
from tests.fixtures.publishing import CapturingPublisher
from tests.libs.test_evaluations import report

from handrail.audit import AuditLog, verify_chain
from handrail.contracts import WorkflowSpec
from handrail.contracts.workflows import VoteSpec, branch_hop
from handrail.hashing import join_hash
from handrail.lifecycle import branch_handoffs
from handrail.orchestration import plan_problems, tally
from handrail.state import connect_redis, generation

BRANCHES = {
    "left": {"agent": "a-left", "output_schema": {"type": "object", "required": ["x"]}},
    "right": {"agent": "a-right", "output_schema": {"type": "object"}, "context_view": ["/input"]},
}


def workflow(*steps: dict[str, Any]) -> WorkflowSpec:
    first = {"name": "intake", "agent": "a-intake", "output_schema": {"type": "object"}}
    return WorkflowSpec.model_validate(
        {"name": "w", "goal": "g", "input_schema": {"type": "object"}, "steps": [first, *steps]}
    )


def test_a_parallel_steps_output_is_its_branches_outputs_under_their_names() -> None:
    spec = workflow({"name": "checks", "parallel": BRANCHES}, {"name": "after", "agent": "a", "output_schema": {}})
    checks = spec.step("checks")
    assert checks.agents == ("a-left", "a-right") and checks.agent is None
    assert checks.output_schema == {
        "type": "object",
        "required": ["left", "right"],
        "properties": {"left": BRANCHES["left"]["output_schema"], "right": BRANCHES["right"]["output_schema"]},
    }
    assert spec.agents == ("a-intake", "a-left", "a-right", "a")
    # Each branch is a hop of its own; the parallel step itself runs none.
    left = spec.hop("checks.left")
    assert left is not None and (left.agent, left.output_schema) == ("a-left", BRANCHES["left"]["output_schema"])
    assert spec.hop("checks.right").context_view == ["/input"]  # type: ignore[union-attr]
    assert spec.hop("checks") is None and spec.hop("checks.middle") is None
    assert spec.fork_of("checks.left") is checks and spec.fork_of("after") is None
    assert branch_hop("checks.left") == ("checks", "left")
    assert branch_hop("draft.evaluation") is None and branch_hop("intake") is None


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"name": "checks", "agent": "x", "parallel": BRANCHES}, "give one of `agent`"),
        ({"name": "checks", "output_schema": {}}, "give one of `agent`"),
        ({"name": "checks", "parallel": {"only": BRANCHES["left"]}}, "at least 2 items"),
        (
            {"name": "checks", "parallel": {**BRANCHES, "evaluation": BRANCHES["left"]}},
            "may not be called `evaluation`",
        ),
        ({"name": "checks", "parallel": {"Bad.Name": BRANCHES["left"], **BRANCHES}}, "should match pattern"),
        ({"name": "checks", "parallel": BRANCHES, "evaluator": {"rules": []}}, "evaluator"),
        ({"name": "checks", "parallel": BRANCHES, "on_branch_failure": "quorum"}, "needs a `quorum`"),
        ({"name": "checks", "parallel": BRANCHES, "quorum": 1}, "needs a `quorum`, and only it has one"),
        ({"name": "checks", "parallel": BRANCHES, "on_branch_failure": "quorum", "quorum": 3}, "more than its 2"),
        ({"name": "x", "agent": "a", "output_schema": {}, "on_branch_failure": "review"}, "are for a parallel step"),
    ],
)
def test_a_parallel_step_is_declared_one_way(step: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        workflow(step)


def test_the_first_step_is_not_parallel() -> None:
    with pytest.raises(ValidationError, match="the first step may not be parallel"):
        WorkflowSpec.model_validate(
            {"name": "w", "goal": "g", "input_schema": {}, "steps": [{"name": "checks", "parallel": BRANCHES}]}
        )


def test_the_fork_hands_every_branch_the_same_head() -> None:
    step = report({"summary": "s"})
    point, handoffs = branch_handoffs(
        step, parallel="checks", branches={"left": "a-left", "right": "a-right"}, sender="v"
    )
    assert point.head == step.context_hash and point.step == "checks"
    assert [(h.step, h.receiver) for h in handoffs] == [("checks.left", "a-left"), ("checks.right", "a-right")]
    assert {h.parent_hash for h in handoffs} == {step.context_hash} and all(h.fork == point for h in handoffs)
    assert len({h.message_id for h in handoffs}) == 2
    again, _ = branch_handoffs(step, parallel="checks", branches={"left": "a-left", "right": "a-right"}, sender="v")
    assert again.id == point.id, "derived from the report: a redelivery forks the same"


@pytest.fixture
async def audit(redis_url: str) -> AsyncIterator[tuple[AuditLog, CapturingPublisher]]:
    redis = connect_redis(redis_url)
    sink = CapturingPublisher()
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(redis, prefix)
    yield AuditLog(redis, sink, "audit", prefix=prefix), sink  # type: ignore[arg-type]
    await redis.aclose()


@pytest.mark.bus
async def test_audit_verify_checks_a_joins_parents(audit: tuple[AuditLog, CapturingPublisher]) -> None:
    log, sink = audit
    heads = {"left": "1" * 64, "right": "2" * 64}

    async def chain(task: str, parents: dict[str, str], input_hash: str) -> str | None:
        for branch, head in heads.items():
            await log.record(task, dedupe_key=branch, actor="agent:a", action="step.completed", step=f"checks.{branch}",
                             input_hash="0" * 64, output_hash=head)  # fmt: skip
        await log.record(task, dedupe_key="join", actor="service:validator", action="branches.joined", step="checks",
                         input_hash=input_hash, output_hash="3" * 64, details={"parents": parents})  # fmt: skip
        found = verify_chain([(None, r) for r in sink.records if r.task_id == task])
        return None if found.intact else found.problem

    assert await chain("good", heads, join_hash(heads)) is None
    forged = {**heads, "right": "9" * 64}
    assert "as branch 'right''s head, which reached 222222222222" in str(
        await chain("forged", forged, join_hash(forged))
    )
    assert "not the join_hash of its parents" in str(await chain("unhashed", heads, "4" * 64))
    assert "names no parents" in str(await chain("orphan", {}, join_hash({})))


def vote(**fields: Any) -> VoteSpec:
    return VoteSpec.model_validate({"agent": "a", "samples": 3, **fields})


@pytest.mark.parametrize(
    ("spec", "answers", "passed", "agreed", "answer"),
    [
        (vote(), [{"r": 1}, {"r": 2}, {"r": 1}], True, 2, {"r": 1}),
        (vote(), [{"r": 1}, {"r": 2}, {"r": 3}], False, 1, {"r": 1}),
        (vote(quorum=3), [{"r": 1}, {"r": 1}, {"r": 2}], False, 2, {"r": 1}),
        (vote(aggregate="unanimous"), [{"r": 1}, {"r": 1}, {"r": 1}], True, 3, {"r": 1}),
        (vote(aggregate="unanimous"), [{"r": 1}, {"r": 1}, {"r": 2}], False, 2, {"r": 1}),
        (vote(), [{"r": 2}, {"r": 1}, {"r": 1}], True, 2, {"r": 1}),
        (vote(samples=4), [{"r": 2}, {"r": 1}, {"r": 1}, {"r": 2}], False, 2, {"r": 2}),  # a tie: the earliest
        (vote(aggregate="samples.exists(s, s.r == 3)"), [{"r": 1}, {"r": 3}, {"r": 1}], True, 2, {"r": 1}),
        (vote(aggregate="samples.all(s, s.q > 0)"), [{"r": 1}, {"r": 1}, {"r": 1}], False, 3, {"r": 1}),
    ],
)
def test_a_vote_decides_by_its_rule(
    spec: VoteSpec, answers: list[dict[str, Any]], passed: bool, agreed: int, answer: dict[str, Any]
) -> None:
    counted = tally(spec, answers, {})
    assert (counted.passed, counted.agreed, counted.answer) == (passed, agreed, answer)
    assert counted.samples == len(answers)


def test_a_vote_is_declared_with_a_quorum_it_can_reach() -> None:
    with pytest.raises(ValidationError, match="quorum 4 is more than the 3 samples"):
        vote(quorum=4)
    with pytest.raises(ValidationError, match="not a valid CEL expression"):
        vote(aggregate="samples.(")
    spec = workflow({"name": "risk", "vote": {"agent": "v", "samples": 3}, "output_schema": {"type": "object"}})
    risk = spec.step("risk")
    assert risk.agents == ("v",) and list(risk.branches or {}) == ["sample-1", "sample-2", "sample-3"]
    sample = spec.hop("risk.sample-2")
    assert sample is not None and (sample.agent, sample.output_schema) == ("v", {"type": "object"})


ORCHESTRATE = {"name": "plan", "kind": "orchestrate", "agent": "planner", "workers": ["w1", "w2"], "max_subtasks": 2}


def subtasks(*agents: str) -> dict[str, Any]:
    return {"subtasks": [{"name": f"s{i}", "agent": a, "input": {}} for i, a in enumerate(agents)]}


@pytest.mark.parametrize(
    ("plan", "remaining", "problem"),
    [
        (subtasks("w1", "w2"), None, None),
        (subtasks("w1", "w2"), 2, None),
        ({"steps": []}, None, "plan: 'subtasks' is a required property"),
        ({"subtasks": [{"name": "Bad", "agent": "w1", "input": {}}]}, None, "plan/subtasks/0/name"),
        (subtasks("w1", "intruder"), None, "plan/subtasks/1/agent: 'intruder' is not one of this step's workers"),
        (subtasks("w1", "w1", "w2"), None, "3 subtasks, more than this step's max_subtasks 2"),
        (subtasks("w1", "w2"), 1, "2 subtasks, but the task's budget has 1 steps left"),
        ({"subtasks": [{"name": "a", "agent": "w1", "input": {}}] * 2}, None, "names repeat (['a'])"),
    ],
)
def test_a_plan_is_checked_before_it_runs(plan: dict[str, Any], remaining: int | None, problem: str | None) -> None:
    spec = workflow(ORCHESTRATE).step("plan")
    found = plan_problems(plan, spec, remaining)
    assert (found == []) if problem is None else any(problem in p for p in found), found


def test_an_orchestrating_step_names_its_planner_and_workers() -> None:
    spec = workflow(ORCHESTRATE)
    plan = spec.step("plan")
    assert plan.agents == ("planner", "w1", "w2") and plan.output_schema == {"type": "object"}
    assert spec.hop("plan") is plan, "the planner's own hop"
    subtask = spec.hop("plan.anything")
    assert subtask is not None and subtask.agent is None and subtask.workers == ["w1", "w2"]
    with pytest.raises(ValidationError, match="an orchestrating step has an `agent`"):
        workflow({**ORCHESTRATE, "workers": []})
    with pytest.raises(ValidationError, match="only a step of `kind: orchestrate` has `workers`"):
        workflow({"name": "x", "agent": "a", "output_schema": {}, "workers": ["w1"]})
