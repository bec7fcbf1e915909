"""Evaluator-optimizer on real Kafka and Redis: a step whose output fails its evaluator runs again with the
critique in its context, each run a hop of its own on the hash chain, until it passes or its runs are spent."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from tests.fixtures.cli import handrail
from tests.fixtures.metrics import scrape, total
from tests.fixtures.stack import Stack, merged_config, review_requests

from handrail.client import HandrailClient
from handrail.hashing import context_hash
from handrail.messages import HandoffEnvelope, StepCompleted, TaskStatus
from handrail_dev import signing_keys

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's contracts, the context test's viewer, and the evaluator test workflows with their drafter."""
    return merged_config(tmp_path_factory.mktemp("evaluator-config"), "context", "evaluator")


async def test_a_step_runs_again_with_its_critique_until_it_passes(
    client: HandrailClient, stack: Stack, stack_config_dir: Path
) -> None:
    before = await scrape(stack, "validator")
    task_id = await client.submit("refine-test", {"topic": "x"}, task_id=f"refine-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.steps == 4, "three runs of draft, each charged to the budget, and the step after"

    reports = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
    drafts = [r for r in reports if r.step == "draft"]
    assert [d.output["revision"] for d in drafts] == [None, 2, 3]
    # Run 1 broke its output schema: run 2 was told so; run 2 failed the rule: run 3 was told that.
    assert drafts[1].output["told"] == ["output/revision: None is not of type 'integer'"]
    assert drafts[2].output["told"] == ["third-time: not yet: revise it once more"]
    handoffs = [
        HandoffEnvelope.model_validate_json(v) for v in await stack.read(stack.topics.agent("drafter"), task_id)
    ]
    assert [h.context.get("evaluations", {}).get("draft", {}).get("iteration") for h in handoffs] == [None, 2, 3]
    # Each run is a hop on the chain: it leaves from the report before it, with the critique in its hash.
    for report, handoff in zip(drafts, handoffs[1:], strict=False):
        assert handoff.parent_hash == report.context_hash
        assert handoff.context_hash == context_hash(handoff.context)
    after = next(r for r in reports if r.step == "after")
    assert after.parent_hash == drafts[-1].context_hash
    assert after.output["seen"]["steps"]["draft"]["revision"] == 3, "the passing output is the one handed on"

    audit = [json.loads(v) for v in await stack.read(stack.topics.audit, task_id, settle_s=1.0)]
    actions = [r["action"] for r in audit]
    assert actions.count("evaluation.failed") == 2 and actions.count("step.completed") == 4
    failed = [r for r in audit if r["action"] == "evaluation.failed"]
    assert [r["details"]["iteration"] for r in failed] == [2, 3]
    assert failed[1]["details"]["critique"] == ["third-time: not yet: revise it once more"]
    assert failed[0]["input_hash"] == drafts[0].context_hash and failed[0]["output_hash"] == handoffs[1].context_hash
    assert any(op["path"] == "/evaluations" for op in failed[0]["details"]["patch"])

    after_metrics = await scrape(stack, "validator")
    verdicts = {
        v: total(after_metrics, "handrail_evaluations_total", workflow="refine-test", verdict=v)
        - total(before, "handrail_evaluations_total", workflow="refine-test", verdict=v)
        for v in ("passed", "iterated", "exhausted")
    }
    assert verdicts == {"passed": 1, "iterated": 2, "exhausted": 0}

    env = {
        "HANDRAIL_KAFKA_BOOTSTRAP": stack.bootstrap,
        "HANDRAIL_TOPIC_PREFIX": stack.topics.prefix,
        "HANDRAIL_TRUSTED_KEYS_FILE": str(stack.run_dir / signing_keys.FOLDER),
    }
    traced = handrail("trace", task_id, env=env)
    assert traced.returncode == 0, traced.stderr
    assert "evaluation.failed step=draft" in traced.stdout and "third-time: not yet" in traced.stdout
    assert "audit chain intact" in traced.stdout, traced.stdout
    watched = handrail(
        "watch", task_id, "--idle-timeout-s", "2", env={**env, "HANDRAIL_CONFIG_DIR": str(stack_config_dir)}
    )
    assert watched.returncode == 0, watched.stderr
    assert "handoff      draft (run 3) -> drafter" in watched.stdout, watched.stdout
    assert "told: third-time: not yet: revise it once more" in watched.stdout
    assert "step done    draft (run 2) by drafter" in watched.stdout
    # Each run of the step has its own model call under its own record.
    runs = traced.stdout.split("step.completed step=draft")[1:]
    assert len(runs) == 3
    assert [run.split("evaluation.failed")[0].split("step.completed")[0].count("model_call") for run in runs] == [
        1,
        1,
        1,
    ]


async def test_an_evaluator_loop_that_never_converges_fails_the_task_after_its_last_run(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = await client.submit("stubborn-test", {"topic": "x"}, task_id=f"stubborn-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.FAILED
    assert result.error_type == "evaluation_exhausted" and result.steps == 2
    assert "after 2 run(s)" in (result.reason or "") and "'perfect' was expected" in (result.reason or "")
    reports = await stack.read(stack.topics.steps, task_id)
    assert len(reports) == 2, "no run beyond max_iterations"


async def test_an_exhausted_evaluator_can_leave_the_last_output_to_a_person(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = await client.submit("stubborn-review-test", {}, task_id=f"stubborn-r-{uuid.uuid4().hex[:10]}")
    requests = await review_requests(stack, task_id)
    assert len(requests) == 1
    request = requests[0]
    assert request.trigger.value == "evaluation" and request.checkpoint is not None
    assert request.checkpoint.context["evaluations"]["draft"]["iteration"] == 2
    assert "failed its evaluation after 2 run(s)" in request.reason
    assert await stack.results_for(task_id) == [], "parked: no result until a person decides"


async def test_an_evaluator_agent_judges_the_output_in_a_hop_of_its_own(client: HandrailClient, stack: Stack) -> None:
    task_id = await client.submit("critic-test", {}, task_id=f"critic-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED, result.reason
    reports = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
    assert [(r.step, r.agent) for r in reports] == [
        ("draft", "drafter"),
        ("draft.evaluation", "critic-yes"),
        ("after", "viewer"),
    ]
    draft, verdict, after = reports
    assert verdict.parent_hash == draft.context_hash and after.parent_hash == verdict.context_hash
    assert verdict.output["saw"] == draft.output, "the critic was shown the output it judged"
    # The step after is handed the judged output, the verdict beside it.
    assert after.output["seen"]["steps"]["draft"] == draft.output
    assert after.output["seen"]["steps"]["draft.evaluation"]["passed"] is True
    assert result.output == after.output and result.steps == 3


async def test_an_evaluator_agents_critique_is_what_the_step_is_told(client: HandrailClient, stack: Stack) -> None:
    task_id = await client.submit("critic-never-test", {}, task_id=f"critic-n-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.FAILED, (result.status, result.error_type, result.reason)
    assert result.error_type == "evaluation_exhausted"
    assert "too vague: name the vendor" in (result.reason or "")
    reports = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
    assert [r.step for r in reports] == ["draft", "draft.evaluation", "draft", "draft.evaluation"]
    assert reports[2].output["told"] == ["too vague: name the vendor"] and reports[2].output["revision"] == 2
    # The second run leaves from the verdict's hash, with the critique in the context it was handed.
    drafter = [HandoffEnvelope.model_validate_json(v) for v in await stack.read(stack.topics.agent("drafter"), task_id)]
    assert drafter[1].parent_hash == reports[1].context_hash
    assert reports[2].parent_hash == drafter[1].context_hash == context_hash(drafter[1].context)
