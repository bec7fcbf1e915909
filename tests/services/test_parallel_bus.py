"""Parallel steps (sectioning) on real Kafka and Redis: branches run at once on their agents' topics, each on a
chain of its own from the fork, and are joined exactly once, whatever order they finish in and however often
their reports are delivered; one task budget holds across all of them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path

import pytest
from tests.fixtures.cli import handrail
from tests.fixtures.stack import Stack, merged_config, review_requests

from handrail.audit import AuditRecord, verify_chain
from handrail.client import HandrailClient
from handrail.hashing import join_hash
from handrail.messages import HandoffEnvelope, StepCompleted, TaskStatus
from handrail.signing import TrustStore, Verifier
from handrail_dev import signing_keys

pytestmark = [pytest.mark.bus, pytest.mark.timeout(300)]

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's contracts, the context test's viewer, and the parallel test workflows with their agents."""
    return merged_config(tmp_path_factory.mktemp("parallel-config"), "context", "parallel")


async def reports_of(stack: Stack, task_id: str) -> list[StepCompleted]:
    return [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]


async def audit_of(stack: Stack, task_id: str) -> list[dict[str, object]]:
    return [json.loads(v) for v in await stack.read(stack.topics.audit, task_id, settle_s=1.0)]


async def test_branches_run_at_once_and_are_joined_once_in_any_order(client: HandrailClient, stack: Stack) -> None:
    task_id = await client.submit("section-test", {"who": "acme"}, task_id=f"section-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.steps == 4

    reports = await reports_of(stack, task_id)
    by_step = {r.step: r for r in reports}
    assert [r.step for r in reports] == ["intake", "checks.right", "checks.left", "summary"], "right is in first"
    intake, left, right, summary = (
        by_step["intake"],
        by_step["checks.left"],
        by_step["checks.right"],
        by_step["summary"],
    )
    # Each branch left from the fork (the intake's hash) on a chain of its own.
    for branch in (left, right):
        assert branch.fork is not None and branch.fork.head == intake.context_hash
        assert branch.handoff is not None and branch.handoff.parent_hash == intake.context_hash
    assert left.output["saw"] == intake.output, "a branch is shown the context the fork left with"
    # The step after is handed both outputs under the branch names, chained on the joined step.
    assert summary.output["seen"]["steps"]["checks"] == {"left": left.output, "right": right.output}
    assert "checks.left" not in summary.output["seen"]["steps"]
    handoffs = [HandoffEnvelope.model_validate_json(v) for v in await stack.read(stack.topics.agent("viewer"), task_id)]
    assert [h.step for h in handoffs] == ["intake", "summary"], "one join, one handoff of the step after"

    audit = await audit_of(stack, task_id)
    actions = [r["action"] for r in audit]
    assert actions.count("branches.forked") == 1 and actions.count("branches.joined") == 1
    joined = next(r for r in audit if r["action"] == "branches.joined")
    parents = {"left": left.context_hash, "right": right.context_hash}
    assert joined["details"]["parents"] == parents and joined["input_hash"] == join_hash(parents)
    assert handoffs[1].parent_hash == joined["output_hash"]

    env = {
        "HANDRAIL_KAFKA_BOOTSTRAP": stack.bootstrap,
        "HANDRAIL_TOPIC_PREFIX": stack.topics.prefix,
        "HANDRAIL_TRUSTED_KEYS_FILE": str(stack.run_dir / signing_keys.FOLDER),
    }
    traced = handrail("trace", task_id, env=env)
    assert traced.returncode == 0, traced.stderr
    assert "audit chain intact" in traced.stdout, traced.stdout
    assert "branches.joined step=checks" in traced.stdout and "step.completed step=checks.left" in traced.stdout

    # A branch's report delivered again after the join joins nothing twice.
    raw = next(v for v in await stack.read(stack.topics.steps, task_id) if b'"checks.right"' in v)
    await stack.produce(stack.topics.steps, raw, key=task_id)
    await asyncio.sleep(3)
    handoffs = [HandoffEnvelope.model_validate_json(v) for v in await stack.read(stack.topics.agent("viewer"), task_id)]
    assert len({h.message_id for h in handoffs if h.step == "summary"}) == 1
    assert len({r.message_id for r in await stack.results_for(task_id)}) == 1


async def test_branches_racing_for_the_last_of_the_budget_get_it_once(client: HandrailClient, stack: Stack) -> None:
    task_id = await client.submit("section-budget-test", {}, task_id=f"section-b-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.HALTED and result.error_type == "budget_exhausted", result.reason
    reports = await reports_of(stack, task_id)
    branches = sorted((r.step, r.status) for r in reports if r.step.startswith("checks."))
    assert [status for _, status in branches].count("completed") <= 1
    assert any(status == "halted" for _, status in branches), branches
    assert result.steps <= 2, "the budget was never overspent"
    assert not any(r.step == "summary" for r in reports)


async def test_a_branch_that_breaks_its_schema_fails_the_task_without_a_join(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = await client.submit("section-broken-test", {}, task_id=f"section-x-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.FAILED and result.error_type == "output_schema_violation"
    assert "checks.right" in (result.reason or "")
    await asyncio.sleep(2)  # the slow branch comes in after the end
    assert "branches.joined" not in [r["action"] for r in await audit_of(stack, task_id)]
    assert len(await stack.results_for(task_id)) == 1


async def test_a_validator_killed_while_branches_join_joins_each_task_once(
    client: HandrailClient, stack: Stack
) -> None:
    # SIGKILLed three times while the branches of a dozen tasks come in: wherever a kill lands (a branch
    # recorded, the last one recorded but not joined, joined but not handed on), the redelivered reports
    # join each task once.
    task_ids = [f"section-k-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    for task_id in task_ids:
        await client.submit("section-test", {"n": task_id}, task_id=task_id)
    for delay_s in (0.8, 0.4, 0.6):
        await asyncio.sleep(delay_s)
        os.kill(stack.pid("validator"), signal.SIGKILL)
        assert await stack.wait_exited("validator", timeout_s=10)
        stack.start("validator")
    verifier = Verifier(TrustStore.from_file(stack.run_dir / signing_keys.FOLDER))
    for task_id in task_ids:
        result = await client.wait_for_result(task_id, timeout_s=120)
        assert result.status == TaskStatus.COMPLETED, f"{task_id}: {result.status} {result.reason}"
        assert len({r.message_id for r in await stack.results_for(task_id)}) == 1
        viewer = await stack.read(stack.topics.agent("viewer"), task_id)
        summaries = {h.message_id for h in map(HandoffEnvelope.model_validate_json, viewer) if h.step == "summary"}
        assert len(summaries) == 1, f"{task_id}: {len(summaries)} different handoffs of the step after the join"
        records = [AuditRecord.model_validate_json(v) for v in await stack.read(stack.topics.audit, task_id)]
        assert len({r.message_id for r in records if r.action == "branches.joined"}) == 1
        report = verify_chain([(None, r) for r in records], verifier)
        assert report.intact, f"audit chain of {task_id}: {report.describe()}"


async def test_a_vote_runs_its_samples_and_hands_on_the_answer_they_agree_on(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = await client.submit("vote-test", {}, task_id=f"vote-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED, result.reason
    reports = await reports_of(stack, task_id)
    samples = sorted(r.step for r in reports if r.step.startswith("risk."))
    assert samples == ["risk.sample-1", "risk.sample-2", "risk.sample-3"]
    summary = next(r for r in reports if r.step == "summary")
    assert summary.output["seen"]["steps"]["risk"] == {"risk": "high"}, "the answer, not the samples"
    joined = next(r for r in await audit_of(stack, task_id) if r["action"] == "branches.joined")
    assert joined["details"]["vote"] == {
        "agreed": 3, "samples": 3, "distinct": 1, "passed": True, "rule": "samples.all(s, s.risk == 'high')",
    }  # fmt: skip
    assert result.steps == 5


async def test_a_vote_short_of_its_quorum_fails_or_goes_to_a_person(client: HandrailClient, stack: Stack) -> None:
    failed_id = await client.submit("vote-split-test", {}, task_id=f"vote-s-{uuid.uuid4().hex[:10]}")
    failed = await client.wait_for_result(failed_id, timeout_s=90)
    assert failed.status == TaskStatus.FAILED and failed.error_type == "vote_disagreement"
    assert "1 of 3 samples gave the most common answer (3 distinct answers; majority of 2)" in (failed.reason or "")

    parked_id = await client.submit("vote-review-test", {}, task_id=f"vote-r-{uuid.uuid4().hex[:10]}")
    requests = await review_requests(stack, parked_id)
    assert len(requests) == 1 and requests[0].trigger.value == "vote"
    checkpoint = requests[0].checkpoint
    assert checkpoint is not None and checkpoint.step == "risk"
    assert checkpoint.output == {"risk": "risk.sample-1"}, "the person decides on the most common (earliest) answer"


async def test_an_orchestrators_plan_runs_as_subtasks_once_its_agent_fixed_it(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = await client.submit("orchestrate-test", {}, task_id=f"orch-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED, result.reason
    reports = await reports_of(stack, task_id)
    plan = next(r for r in reports if r.step == "plan")
    # Its first plan named an agent outside the allow-list: the model was told, within its corrections.
    assert plan.usage.model_calls == 2, "asked again after the rejected plan"
    assert [s["agent"] for s in plan.output["subtasks"]] == ["subtasker", "subtasker"]
    subtasks = {r.step: r for r in reports if r.step.startswith("plan.")}
    assert set(subtasks) == {"plan.first", "plan.second"}
    assert subtasks["plan.second"].output == {"got": {"q": 2}, "name": "second"}, "each subtask gets its input"
    summary = next(r for r in reports if r.step == "summary")
    assert summary.output["seen"]["steps"]["plan"] == {
        "first": {"got": {"q": 1}, "name": "first"},
        "second": {"got": {"q": 2}, "name": "second"},
    }
    assert "subtask" not in summary.output["seen"], "a subtask's input stays in its own branch"
    audit = await audit_of(stack, task_id)
    forked = next(r for r in audit if r["action"] == "branches.forked")
    assert forked["details"]["branches"] == {"plan.first": "subtasker", "plan.second": "subtasker"}
    planned = next(r for r in audit if r["action"] == "step.completed" and r["step"] == "plan")
    assert any(op["path"] == "/steps/plan" for op in planned["details"]["patch"]), "the plan is on the trail"


async def test_an_orchestrator_that_keeps_planning_too_much_runs_out_of_corrections(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = await client.submit("orchestrate-stubborn-test", {}, task_id=f"orch-s-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.HALTED and result.error_type == "too_many_corrections", result.reason
    assert "more than this step's max_subtasks 2" in (result.reason or "")
    assert not any(r.step.startswith("plan.") for r in await reports_of(stack, task_id)), "no subtask ran"


async def test_a_parallel_step_with_a_quorum_goes_on_without_a_failed_branch(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = await client.submit("section-quorum-test", {}, task_id=f"section-q-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED, result.reason
    summary = next(r for r in await reports_of(stack, task_id) if r.step == "summary")
    assert set(summary.output["seen"]["steps"]["checks"]) == {"left"}, "only what succeeded is handed on"
    joined = next(r for r in await audit_of(stack, task_id) if r["action"] == "branches.joined")
    assert set(joined["details"]["parents"]) == {"left", "right"}, "the failed branch's head is a parent too"
    assert "breaks its schema" in joined["details"]["failed"]["right"]

    missed_id = await client.submit("section-quorum-missed-test", {}, task_id=f"section-m-{uuid.uuid4().hex[:10]}")
    missed = await client.wait_for_result(missed_id, timeout_s=90)
    assert missed.status == TaskStatus.FAILED and missed.error_type == "branch_quorum_missed"
    assert "1 of 2 branches of step 'checks' succeeded, short of its quorum 2" in (missed.reason or "")

    parked_id = await client.submit("section-failure-review-test", {}, task_id=f"section-r-{uuid.uuid4().hex[:10]}")
    requests = await review_requests(stack, parked_id)
    assert len(requests) == 1 and requests[0].trigger.value == "branch_failure"
    assert requests[0].checkpoint is not None and set(requests[0].checkpoint.output) == {"left"}
