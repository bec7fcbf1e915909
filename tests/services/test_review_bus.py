"""Human review on real Kafka, real Redis and real HTTP: the services as separate processes.

The validator parks tasks on ``reviews.requested``; the human-review service
indexes them, reviewers decide over HTTP, and a decision resumes the task from
its exact checkpoint (or ends it).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.fixtures.metrics import scrape, total
from tests.fixtures.stack import PROJECT_ROOT, Stack

from handrail.audit import AuditLog
from handrail.bus import Publisher
from handrail.bus.broker import make_broker
from handrail.client import HandrailClient
from handrail.contracts import load_contracts
from handrail.errors import TaskHalted
from handrail.hashing import context_hash
from handrail.lifecycle import Lifecycle
from handrail.messages import HandoffEnvelope, ReviewDecided, ReviewRequested, TaskStatus
from handrail.orchestration import Orchestrator
from handrail.state import TaskStore, connect_redis
from handrail.state.budgets import BudgetStore
from handrail.tools import default_registry
from handrail_review.reviewers import token_digest

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

HERE = Path(__file__).parent
#: One token per test reviewer; `ana`'s is only in reviewers.yaml (as its digest), the rest come from the env.
TOKENS = {name: secrets.token_urlsafe(24) for name in ("ana", "max", "dan", "dora", "ops")}


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return review_config(tmp_path_factory)


def review_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's contracts, the review test workflows, and reviewers with `ana`'s token hashed in the file."""
    config = tmp_path_factory.mktemp("review-base") / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    workflows = yaml.safe_load((PROJECT_ROOT / "config" / "workflows.yaml").read_text())
    workflows["workflows"].update(yaml.safe_load((HERE / "config" / "review-workflows.yaml").read_text())["workflows"])
    (config / "workflows.yaml").write_text(yaml.safe_dump(workflows))
    reviewers = yaml.safe_load((PROJECT_ROOT / "config" / "reviewers.yaml").read_text())
    reviewers["reviewers"]["ana"]["token_sha256"] = token_digest(TOKENS["ana"])
    (config / "reviewers.yaml").write_text(yaml.safe_dump(reviewers))
    return config


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return review_env()


def review_env() -> dict[str, str]:
    """The review tests' settings: the test reviewers' tokens, a fast sweep."""
    return {
        "HANDRAIL_REVIEWER_TOKENS": json.dumps({k: v for k, v in TOKENS.items() if k != "ana"}),
        "HANDRAIL_REVIEW_SWEEP_INTERVAL_S": "0.2",
    }


def review_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.processes['human-review'].http_port}"


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=review_url(stack), timeout=30) as client:
        yield client


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def claim(amount: float, currency: str = "USD", employee_id: str = "E100") -> dict[str, Any]:
    return {"employee_id": employee_id, "amount": amount, "currency": currency, "description": "conference"}


async def pending_review(http: httpx.AsyncClient, task_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """The task's pending review, once the service has indexed it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await http.get("/api/reviews", headers=auth("ops"))
        assert response.status_code == 200, response.text
        found = [r for r in response.json() if r["task_id"] == task_id]
        if found:
            assert len(found) == 1, found
            return dict(found[0])
        await asyncio.sleep(0.2)
    raise AssertionError(f"no pending review for {task_id} within {timeout_s}s")


async def show(http: httpx.AsyncClient, review_id: str, who: str = "ops") -> dict[str, Any]:
    response = await http.get(f"/api/reviews/{review_id}", headers=auth(who))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def requests_for(stack: Stack, task_id: str) -> list[ReviewRequested]:
    return [ReviewRequested.model_validate_json(v) for v in await stack.read(stack.topics.reviews_requested, task_id)]


async def decisions_for(stack: Stack, task_id: str) -> list[ReviewDecided]:
    return [ReviewDecided.model_validate_json(v) for v in await stack.read(stack.topics.reviews_decided, task_id)]


async def test_approve_resumes_the_task_from_its_checkpoint_and_completes_it(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(1200), task_id=new_id("approve"))
    review = await pending_review(http, task_id)
    assert review["rule"] == "manager-approval" and review["role"] == "manager"
    assert await stack.results_for(task_id) == [], "a parked task has no result"

    [request] = await requests_for(stack, task_id)
    assert request.checkpoint is not None and request.checkpoint.step == "decide"
    assert request.context_hash == request.checkpoint.context_hash == context_hash(request.checkpoint.context)
    assert request.expression is not None and "output.amount_usd" in request.expression
    detail = await show(http, review["review_id"])
    assert detail["decisions"] and detail["diff"][0]["path"] == "/steps/decide"
    assert detail["budget"]["steps_used"] == 2

    approved = await http.post(f"/api/reviews/{review['review_id']}/approve", headers=auth("ana"), json={})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["outcome"] == "completed"

    result = await client.wait_for_result(task_id, timeout_s=30)
    assert result.status == TaskStatus.COMPLETED and result.output is not None
    assert result.output["decision"] == "needs_approval"
    assert result.output["escalation"]["role"] == "manager"
    assert result.output["review"]["approved_by"] == ["reviewer:ana"]
    assert result.context_hash == request.context_hash, "resumed from the very checkpoint"
    final = [d for d in await decisions_for(stack, task_id) if d.decision is not None]
    assert [(d.decision, d.by) for d in final] == [("approved", "reviewer:ana")]

    # Deciding again changes nothing: 409, and still one result.
    again = await http.post(f"/api/reviews/{review['review_id']}/approve", headers=auth("ana"), json={})
    assert again.status_code == 409 and again.json()["error"] == "already_decided"
    assert len(await stack.results_for(task_id, settle_s=1)) == 1


async def test_reject_ends_the_task_with_the_reviewers_reason(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(700), task_id=new_id("reject"))
    review = await pending_review(http, task_id)
    rejected = await http.post(
        f"/api/reviews/{review['review_id']}/reject", headers=auth("max"), json={"reason": "duplicate claim"}
    )
    assert rejected.status_code == 200, rejected.text
    result = await client.wait_for_result(task_id, timeout_s=30)
    assert result.status == TaskStatus.REJECTED and result.error_type == "review_rejected"
    assert result.reason == "rejected in review by reviewer:max: duplicate claim"
    assert result.steps == 2


async def test_edit_and_approve_gives_a_new_hash_that_the_next_step_works_on(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("edit-expense", claim(1500), task_id=new_id("edit"))
    review = await pending_review(http, task_id)
    assert review["step"] == "intake" and review["rule"] == "large-intake"
    detail = await show(http, review["review_id"])
    assert detail["context"]["steps"]["intake"]["amount_usd"] == 1500.0
    patch = [{"op": "replace", "path": "/steps/intake/amount_usd", "value": 450.0}]
    edited = await http.post(
        f"/api/reviews/{review['review_id']}/edit",
        headers=auth("ana"),
        json={"patch": patch, "reason": "receipt shows 450"},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["outcome"] == "handoff:decide"

    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.COMPLETED and result.output is not None
    # The decide step saw the edited amount: under 500, so it approved by itself.
    assert result.output["amount_usd"] == 450.0 and result.output["decision"] == "approved"

    [request] = await requests_for(stack, task_id)
    handoffs = [
        HandoffEnvelope.model_validate_json(v)
        for v in await stack.read(stack.topics.agent("expense-approver"), task_id)
    ]
    [handoff] = handoffs
    assert handoff.parent_hash == request.context_hash, "the parent is the checkpoint, the task's head"
    assert handoff.context_hash == context_hash(handoff.context) != request.context_hash
    assert handoff.sender == "human-review"
    [final] = [d for d in await decisions_for(stack, task_id) if d.decision == "approved"]
    assert final.edit == patch and final.context_hash == handoff.context_hash
    audit = [json.loads(v) for v in await stack.read(stack.topics.audit, task_id)]
    [approval] = [a for a in audit if a["action"] == "review.approved"]
    assert approval["details"]["edit"] == patch and approval["output_hash"] == handoff.context_hash


async def test_unauthenticated_forbidden_and_conflicting_requests_get_json_errors(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(8000, "GBP"), task_id=new_id("auth"))
    review = await pending_review(http, task_id)
    assert review["role"] == "director"
    url = f"/api/reviews/{review['review_id']}/approve"

    anonymous = await http.post(url, json={})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthenticated"
    forged = await http.get("/api/reviews", headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401 and forged.json() == {"error": "unauthenticated", "detail": "unknown token"}
    manager = await http.post(url, headers=auth("ana"), json={})
    assert manager.status_code == 403 and manager.json()["error"] == "forbidden"
    assert "needs the role 'director'" in manager.json()["detail"]
    unknown = await http.post("/api/reviews/nope/approve", headers=auth("dan"), json={})
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    no_reason = await http.post(f"/api/reviews/{review['review_id']}/reject", headers=auth("dan"), json={})
    assert no_reason.status_code == 422 and no_reason.json()["error"] == "invalid_request"

    rejected = await http.post(
        f"/api/reviews/{review['review_id']}/reject", headers=auth("dan"), json={"reason": "no receipts"}
    )
    assert rejected.status_code == 200, rejected.text
    late = await http.post(url, headers=auth("dora"), json={})
    assert late.status_code == 409 and late.json()["error"] == "already_decided"
    assert "rejected by reviewer:dan" in late.json()["detail"]
    assert (await client.wait_for_result(task_id, timeout_s=30)).status == TaskStatus.REJECTED
    openapi = await http.get("/api/openapi.json")
    assert openapi.status_code == 200 and "/api/reviews/{review_id}/approve" in openapi.json()["paths"]
    declared = openapi.json()["paths"]["/api/reviews/{review_id}/approve"]["post"]["responses"]
    assert {"401", "403", "404", "409", "422", "503"} <= set(declared)
    assert declared["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    # The API's docs page works offline: Swagger UI is served from the service, not a CDN.
    docs = await http.get("/api/docs")
    assert docs.status_code == 200 and "/api/docs/assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    bundle = await http.get("/api/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000


async def test_the_asyncapi_document_is_this_deployments(stack: Stack, http: httpx.AsyncClient) -> None:
    response = await http.get("/api/asyncapi.json")
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["components"]["parameters"]["prefix"]["default"] == stack.topics.prefix
    assert {"reviews.requested", "reviews.decided", "agent.expense-approver"} <= document["channels"].keys()
    assert "human-review.send.reviews.decided" in document["operations"]


async def test_k_distinct_approvers_are_needed_and_the_same_person_counts_once(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(9000, "GBP"), task_id=new_id("k-of-n"))
    review = await pending_review(http, task_id)
    assert review["approvals_required"] == 2
    url = f"/api/reviews/{review['review_id']}/approve"

    first = await http.post(url, headers=auth("dan"), json={"reason": "fine"})
    assert first.status_code == 200 and first.json()["status"] == "pending", first.text
    assert first.json()["approvals"] == ["reviewer:dan"]
    twice = await http.post(url, headers=auth("dan"), json={"reason": "fine"})
    assert twice.status_code == 409 and twice.json()["error"] == "unchanged", "a repeat changes nothing"
    assert "dan's approval" in twice.json()["detail"] and "1 of 2" in twice.json()["detail"]
    assert await stack.results_for(task_id, settle_s=1) == [], "one approver is not enough"

    second = await http.post(url, headers=auth("dora"), json={})
    assert second.status_code == 200 and second.json()["status"] == "approved", second.text
    result = await client.wait_for_result(task_id, timeout_s=30)
    assert result.status == TaskStatus.COMPLETED and result.output is not None
    decided = await decisions_for(stack, task_id)
    assert [(d.action, d.decision) for d in decided] == [("approve", None), ("approve", "approved")]
    assert decided[-1].approvals == ["reviewer:dan", "reviewer:dora"]


async def test_an_edit_that_drops_approvals_says_whose_and_their_next_vote_counts(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(8500, "GBP"), task_id=new_id("reset"))
    review = await pending_review(http, task_id)
    rid = review["review_id"]
    first = await http.post(f"/api/reviews/{rid}/approve", headers=auth("dan"), json={})
    assert first.status_code == 200 and first.json()["approvals"] == ["reviewer:dan"], first.text

    # The review is of the ledger entry two directors must approve: the edit is of the call's arguments.
    patch = [{"op": "replace", "path": "/decision", "value": "approved"}]
    edited = await http.post(f"/api/reviews/{rid}/edit", headers=auth("dora"), json={"patch": patch})
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert body["status"] == "pending" and body["approvals"] == ["reviewer:dora"], "dan approved another context"
    reset = body["approvals_reset"]
    assert reset["by"] == "reviewer:dora" and reset["dropped"] == ["reviewer:dan"]
    assert "no longer count" in reset["reason"]
    assert (await show(http, rid))["approvals_reset"] == reset, "the review says so too, not only the response"

    again = await http.post(f"/api/reviews/{rid}/approve", headers=auth("dan"), json={})
    assert again.status_code == 200 and again.json()["status"] == "approved", again.text
    result = await client.wait_for_result(task_id, timeout_s=30)
    assert result.status == TaskStatus.COMPLETED and result.output is not None
    final = (await decisions_for(stack, task_id))[-1]
    assert final.approvals == ["reviewer:dan", "reviewer:dora"] and final.edit == patch
    audit = [json.loads(v) for v in await stack.read(stack.topics.audit, task_id)]
    [edit_record] = [a for a in audit if a["action"] == "review.approval" and a["details"]["edit"]]
    assert edit_record["details"]["approvals_dropped"] == ["reviewer:dan"]


async def test_a_review_past_its_deadline_escalates_then_takes_the_default_action(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("quick-expense", claim(1200), task_id=new_id("timeout"))
    review = await pending_review(http, task_id)
    assert review["role"] == "manager"
    result = await client.wait_for_result(task_id, timeout_s=30)

    # Escalated to the next role up after 1.5 s, then rejected: there is no role above a director.
    assert result.status == TaskStatus.REJECTED and result.error_type == "review_rejected"
    assert "no role above 'director' to escalate to" in (result.reason or "")
    requests = await requests_for(stack, task_id)
    assert [(r.level, r.role) for r in requests] == [(0, "manager"), (1, "director")]
    [final] = [d for d in await decisions_for(stack, task_id) if d.decision]
    assert final.decision == "rejected" and final.by == "service:human-review" and final.level == 1
    audit = [json.loads(v)["action"] for v in await stack.read(stack.topics.audit, task_id)]
    assert "review.escalated" in audit and audit[-2:] == ["review.rejected", "task.rejected"]


async def test_a_rule_that_cannot_be_evaluated_fails_closed_to_a_person(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("broken-rule", claim(20), task_id=new_id("broken"))
    review = await pending_review(http, task_id)
    assert review["rule"] == "typo" and "could not be evaluated" in review["reason"]
    approved = await http.post(f"/api/reviews/{review['review_id']}/approve", headers=auth("ops"), json={})
    assert approved.status_code == 200, approved.text
    assert (await client.wait_for_result(task_id, timeout_s=30)).status == TaskStatus.COMPLETED


async def test_a_restart_rebuilds_the_queue_from_kafka_without_losing_or_duplicating(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    parked = [await client.submit("expense-approval", claim(600 + i), task_id=new_id("restart")) for i in range(3)]
    big = await client.submit("expense-approval", claim(7000), task_id=new_id("restart-big"))
    reviews = {t: (await pending_review(http, t))["review_id"] for t in [*parked, big]}
    half = await http.post(f"/api/reviews/{reviews[big]}/approve", headers=auth("dan"), json={})
    assert half.status_code == 200 and half.json()["status"] == "pending"

    stack.stop("human-review")
    # Lose the whole index too: Kafka is the record, Redis only an index.
    redis = connect_redis(stack.redis_url)
    try:
        keys = [k async for k in redis.scan_iter(f"{stack.env['HANDRAIL_REDIS_PREFIX']}{{reviews}}:*")]
        assert keys
        await redis.delete(*keys)
    finally:
        await redis.aclose()
    late = await client.submit("expense-approval", claim(900), task_id=new_id("restart-late"))
    for _ in range(300):  # the validator parks it while the review service is down
        if await requests_for(stack, late):
            break
    stack.start("human-review")

    listed = (await http.get("/api/reviews", headers=auth("ops"))).json()
    ours = [r for r in listed if r["task_id"] in {*reviews, late}]
    assert sorted(r["task_id"] for r in ours) == sorted([*reviews, late]), "each pending review exactly once"
    [rebuilt_big] = [r for r in ours if r["task_id"] == big]
    assert rebuilt_big["approvals"] == ["reviewer:dan"], "a partial approval survives the restart"

    done = await http.post(f"/api/reviews/{reviews[big]}/approve", headers=auth("dora"), json={})
    assert done.status_code == 200 and done.json()["status"] == "approved", done.text
    result = await client.wait_for_result(big, timeout_s=30)
    assert result.status == TaskStatus.COMPLETED and result.output is not None
    assert (await decisions_for(stack, big))[-1].approvals == ["reviewer:dan", "reviewer:dora"]
    for task_id in [*parked, late]:
        review = await pending_review(http, task_id)
        rejected = await http.post(
            f"/api/reviews/{review['review_id']}/reject", headers=auth("ana"), json={"reason": "cleanup"}
        )
        assert rejected.status_code == 200, rejected.text
        assert (await client.wait_for_result(task_id, timeout_s=30)).status == TaskStatus.REJECTED


async def test_other_tasks_keep_flowing_while_a_review_waits(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    parked = await client.submit("expense-approval", claim(2500), task_id=new_id("parked"))
    review = await pending_review(http, parked)
    started = time.monotonic()
    others = [await client.submit("expense-approval", claim(10 + i), task_id=new_id("flow")) for i in range(50)]
    results = [await client.wait_for_result(task_id, timeout_s=60) for task_id in others]
    assert [r.status for r in results] == [TaskStatus.COMPLETED] * 50
    assert all(r.output is not None and r.output["decision"] == "approved" for r in results)
    assert time.monotonic() - started < 60
    assert await stack.results_for(parked) == [], "still parked, losing nothing"
    assert (await show(http, review["review_id"]))["status"] == "pending"

    approved = await http.post(f"/api/reviews/{review['review_id']}/approve", headers=auth("ana"), json={})
    assert approved.status_code == 200, approved.text
    assert (await client.wait_for_result(parked, timeout_s=30)).status == TaskStatus.COMPLETED


def review_cli(stack: Stack, *args: str, who: str = "ana") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HANDRAIL_REVIEW_URL": review_url(stack), "HANDRAIL_REVIEW_TOKEN": TOKENS[who]}
    command = [sys.executable, "-m", "handrail_cli.review", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)


async def test_the_cli_lists_shows_approves_and_rejects(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    approve_id = await client.submit("expense-approval", claim(1100), task_id=new_id("cli-ok"))
    reject_id = await client.submit("expense-approval", claim(1300), task_id=new_id("cli-no"))
    to_approve = (await pending_review(http, approve_id))["review_id"]
    to_reject = (await pending_review(http, reject_id))["review_id"]

    listed = review_cli(stack, "list", "--workflow", "expense-approval", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {to_approve, to_reject} <= {json.loads(line)["review_id"] for line in listed.stdout.splitlines()}
    shown = review_cli(stack, "show", to_approve)
    assert shown.returncode == 0 and json.loads(shown.stdout)["task_id"] == approve_id
    assert review_cli(stack, "approve", to_approve, who="ops").returncode == 1, "ops may not approve a manager's review"

    table = review_cli(stack, "list", "--workflow", "expense-approval")
    assert table.returncode == 0 and to_approve in table.stdout, "ids in full, to copy"
    unknown = review_cli(stack, "approve", "zzzz")
    assert unknown.returncode == 2 and "no pending or recent review starts with 'zzzz'" in unknown.stderr

    approved = review_cli(stack, "approve", to_approve[:8], "--reason", "ok")  # a unique prefix will do
    assert approved.returncode == 0 and "approved → completed" in approved.stdout, approved.stderr
    rejected = review_cli(stack, "reject", to_reject, "--reason", "over budget")
    assert rejected.returncode == 0 and "rejected → rejected" in rejected.stdout, rejected.stderr
    again = review_cli(stack, "reject", to_reject, "--reason", "twice")
    assert again.returncode == 1 and "error 409" in again.stderr
    assert (await client.wait_for_result(approve_id, timeout_s=30)).status == TaskStatus.COMPLETED
    assert (
        await client.wait_for_result(reject_id, timeout_s=30)
    ).reason == "rejected in review by reviewer:ana: over budget"


async def test_review_kpis_count_escalations_outcomes_and_time_to_decision(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    before_review, before_validator = await scrape(stack, "human-review"), await scrape(stack, "validator")
    tasks = {
        how: await client.submit("expense-approval", claim(amount), task_id=new_id(f"kpi-{how}"))
        for how, amount in (("plain", 1400), ("edited", 1600), ("rejected", 1800))
    }
    reviews = {how: (await pending_review(http, task_id))["review_id"] for how, task_id in tasks.items()}
    # The gauges are the sweep's (every 0.2 s here): wait for one that saw the three and their wait.
    for _ in range(100):
        gauges = await scrape(stack, "human-review")
        if gauges["handrail_reviews_pending{}"] >= 3 and gauges["handrail_review_oldest_pending_seconds{}"] >= 1.0:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"the review gauges never showed the three pending reviews: {gauges}")
    patch = [{"op": "add", "path": "/steps/decide/note", "value": "checked"}]
    answers = [
        await http.post(f"/api/reviews/{reviews['plain']}/approve", headers=auth("ana"), json={}),
        await http.post(f"/api/reviews/{reviews['edited']}/edit", headers=auth("ana"), json={"patch": patch}),
        await http.post(f"/api/reviews/{reviews['rejected']}/reject", headers=auth("ana"), json={"reason": "no"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    for task_id in tasks.values():
        await client.wait_for_result(task_id, timeout_s=30)

    after = await scrape(stack, "human-review")

    def grew(metric: str, samples: dict[str, float], old: dict[str, float], **labels: str) -> float:
        return total(samples, metric, **labels) - total(old, metric, **labels)

    for outcome in ("approved_unchanged", "edited", "rejected"):
        assert (
            grew("handrail_review_outcomes_total", after, before_review, outcome=outcome, agent="expense-approver") == 1
        )
    assert grew("handrail_review_decision_seconds_count", after, before_review, workflow="expense-approval") == 3
    escalated = grew(
        "handrail_reviews_requested_total", await scrape(stack, "validator"), before_validator, rule="manager-approval"
    )
    assert escalated == 3, "each parked task counted once, by its rule"


async def test_watch_says_the_task_waits_for_a_person_and_follows_it_to_its_end(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("expense-approval", claim(7000, "GBP"), task_id=new_id("watch"))
    env = {**os.environ, "HANDRAIL_KAFKA_BOOTSTRAP": stack.bootstrap, "HANDRAIL_TOPIC_PREFIX": stack.topics.prefix}
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handrail_cli", "watch", task_id, "--idle-timeout-s", "1",
        env=env, cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    seen: list[bytes] = []
    try:
        review = await pending_review(http, task_id)
        assert watcher.stdout is not None
        # The watcher starts slowly on a loaded machine: wait until it has seen the review, then stay quiet
        # for longer than its idle timeout (a review is not "no news").
        while not any(b"still waiting for review" in line for line in seen):
            seen.append(await asyncio.wait_for(watcher.stdout.readline(), 60))
            assert seen[-1], f"watch ended before it said it waits for the review: {b''.join(seen).decode()}"
        url = f"/api/reviews/{review['review_id']}/approve"
        assert (await http.post(url, headers=auth("dan"), json={})).status_code == 200
        await asyncio.sleep(1.5)
        assert (await http.post(url, headers=auth("dora"), json={})).status_code == 200
        out, err = await asyncio.wait_for(watcher.communicate(), 60)
    finally:
        if watcher.returncode is None:
            watcher.kill()
    text = b"".join(seen).decode() + out.decode()
    assert watcher.returncode == 0, (text, err.decode())
    assert "waiting for review: rule" in text and "role director, 0 of 2 approvals" in text, text
    assert f"still waiting for review {review['review_id']}" in text
    assert "approval     by reviewer:dan: 1 of 2 approvals" in text
    # The decision's own record follows its effects (the result): the result line is the last word.
    last = text.splitlines()[-1]
    assert last.startswith("result       completed"), text


async def test_a_reviewer_logs_in_approves_on_the_web_page_and_the_task_completes(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    require_chromium()
    from playwright.async_api import async_playwright, expect

    task_id = await client.submit("expense-approval", claim(3000), task_id=new_id("page"))
    review_id = (await pending_review(http, task_id))["review_id"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(review_url(stack) + "/")
            await page.fill("#token", "not-a-token")
            await page.click("#login")
            await expect(page.locator("#login-error")).to_have_text("Unknown token.")
            await page.fill("#token", TOKENS["ana"])
            await page.click("#login")
            await expect(page.locator("#whoami")).to_contain_text("Ana Lee (manager)")
            row = page.locator(f'tr[data-task-id="{task_id}"]')
            await expect(row).to_contain_text("manager")
            await row.locator("a.open").click()
            await expect(page.locator("#d-task")).to_have_text(task_id)
            await expect(page.locator("#d-diff")).to_contain_text("add /steps/decide")
            await expect(page.locator("#d-decisions")).to_contain_text("tool_call check_policy ok")
            await page.fill("#reason", "receipt attached")
            await page.click("#approve")
            await expect(page.locator("#status")).to_have_text("Decided: approved, task completed")
            await expect(page.locator("#d-records")).to_contain_text("reviewer:ana approved: receipt attached")
        finally:
            await browser.close()
    result = await client.wait_for_result(task_id, timeout_s=30)
    assert result.status == TaskStatus.COMPLETED and result.output is not None
    assert result.output["review"] == {
        "review_id": review_id,
        "decision": "approved",
        "approved_by": ["reviewer:ana"],
        "edited": False,
    }


async def test_a_halt_escalated_to_review_runs_the_step_again_once_approved(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient, stack_config_dir: Path
) -> None:
    approver, topic = "worker-expense-approver", stack.topics.agent("expense-approver")
    stack.stop(approver)
    try:
        task_id = await client.submit("expense-approval", claim(100), task_id=new_id("halt"))
        for _ in range(60):
            if envelopes := [HandoffEnvelope.model_validate_json(v) for v in await stack.read(topic, task_id)]:
                break
        [envelope] = envelopes
        # As if the worker had taken the step and a budget had stopped it: its halt hook, with escalation on.
        await stack.skip_pending(stack.group(f"agent-{envelope.receiver}"), topic)
        broker = make_broker(stack.bootstrap, client_id="test-halt")
        await broker.connect()
        redis = connect_redis(stack.redis_url)
        try:
            prefix, publisher = stack.env["HANDRAIL_REDIS_PREFIX"], Publisher(broker)
            store, audit = TaskStore(redis, prefix), AuditLog(redis, publisher, stack.topics.audit, prefix)
            lifecycle = Lifecycle(approver, store, BudgetStore(redis, prefix), publisher, stack.topics, audit)
            contracts = load_contracts(stack_config_dir, default_registry().names())
            halt = TaskHalted("agent budget for tokens exhausted", error_type="budget_exhausted", task_id=task_id)
            park = Orchestrator(approver, contracts).review_halt(halt, envelope)
            assert park is not None, "an approval-gated agent's halt goes to a person"
            await lifecycle.apply(park)
        finally:
            await redis.aclose()
            await broker.stop()
    finally:
        stack.start(approver)

    review = await pending_review(http, task_id)
    assert (review["trigger"], review["role"]) == ("halt", "manager")
    [request] = await requests_for(stack, task_id)
    assert request.halted == envelope and request.halt_error_type == "budget_exhausted"
    assert await stack.results_for(task_id) == [], "parked, not ended halted"
    approved = await http.post(f"/api/reviews/{review['review_id']}/approve", headers=auth("ana"), json={})
    assert approved.status_code == 200 and approved.json()["outcome"] == "retry:decide", approved.text

    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.COMPLETED and result.output is not None
    assert result.output["decision"] == "approved"
    handoffs = [HandoffEnvelope.model_validate_json(v) for v in await stack.read(topic, task_id)]
    assert [(h.attempt, h.sender) for h in handoffs] == [(1, "validator"), (2, "human-review")]
    assert handoffs[1].parent_hash == envelope.context_hash == handoffs[1].context_hash


async def test_a_restart_on_a_wiped_redis_never_carries_a_decided_review_out_again(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    """Redis loses everything (the index, the task records); the rebuilt index must not republish results."""
    approved_id = await client.submit("expense-approval", claim(800), task_id=new_id("wiped-approved"))
    rejected_id = await client.submit("expense-approval", claim(900), task_id=new_id("wiped-rejected"))
    for task_id, action in ((approved_id, "approve"), (rejected_id, "reject")):
        review = await pending_review(http, task_id)
        body = {} if action == "approve" else {"reason": "not this time"}
        decided = await http.post(f"/api/reviews/{review['review_id']}/{action}", headers=auth("ana"), json=body)
        assert decided.status_code == 200, decided.text
        await client.wait_for_result(task_id, timeout_s=30)
    decided_before = {t: len(await decisions_for(stack, t)) for t in (approved_id, rejected_id)}

    stack.stop("human-review")
    redis = connect_redis(stack.redis_url)
    try:
        keys = [k async for k in redis.scan_iter(f"{stack.env['HANDRAIL_REDIS_PREFIX']}*")]
        await redis.delete(*keys)
    finally:
        await redis.aclose()
    stack.start("human-review")
    for _ in range(50):  # until the index is rebuilt (the API answers 503 before)
        if (await http.get("/api/reviews", headers=auth("ops"))).status_code == 200:
            break
        await asyncio.sleep(0.2)

    for task_id in (approved_id, rejected_id):
        assert len(await stack.results_for(task_id, settle_s=4)) == 1, "a decided review was carried out again"
        assert len(await decisions_for(stack, task_id)) == decided_before[task_id]
    listed = (await http.get("/api/reviews", headers=auth("ops"))).json()
    assert not [r for r in listed if r["task_id"] in (approved_id, rejected_id)], "decided reviews are not pending"


async def test_edits_keep_the_contract_and_a_refused_request_changes_nothing(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    task_id = await client.submit("edit-expense", claim(1600), task_id=new_id("contract"))
    review_id = (await pending_review(http, task_id))["review_id"]
    edit_url = f"/api/reviews/{review_id}/edit"

    async def refused(body: dict[str, Any], status: int, says: str, **kwargs: Any) -> None:
        response = await http.post(edit_url, headers=auth("ana"), json=body, **kwargs)
        assert response.status_code == status and says in response.json()["detail"], response.text

    await refused({"patch": [{"op": "remove", "path": "/input"}]}, 422, "the edited context has no 'input'")
    await refused({"patch": [{"op": "remove", "path": "/steps/intake"}]}, 422, "steps/intake: a finished step")
    await refused(
        {"patch": [{"op": "remove", "path": "/steps/intake/amount_usd"}]}, 422, "steps/intake: 'amount_usd' is a"
    )
    await refused(
        {"patch": [{"op": "replace", "path": "/input/employee_id", "value": "E999"}]}, 422, "locks /input/employee_id"
    )
    await refused({"patch": [{"op": "replace", "path": "/input", "value": {}}]}, 422, "locks /input/employee_id")
    await refused({"patch": [], "task_id": "other", "by": "reviewer:dan"}, 422, "Extra inputs are not permitted")
    huge = {"op": "add", "path": "/steps/intake/notes", "value": "x" * (300 * 1024)}
    await refused({"patch": [huge]}, 413, "at most 262144")  # under the body limit, over the edit limit
    await refused({"context": {"blob": "x" * (2 * 1024 * 1024)}}, 413, "at most 1048576 are taken")

    not_utf8 = await http.post(
        edit_url, headers={**auth("ana"), "content-type": "application/json"}, content=b'{"context": "\xff\xfe"}'
    )
    assert not_utf8.status_code in (400, 422) and set(not_utf8.json()) == {"error", "detail"}, not_utf8.text
    nowhere = await http.get("/api/nowhere", headers=auth("ana"))
    assert nowhere.status_code == 404 and nowhere.json()["error"] == "not_found"

    detail = await show(http, review_id)
    assert detail["status"] == "pending" and detail["approvals"] == [] and detail["edit"] is None
    assert detail["records"] == [], "nothing was recorded"
    page = await http.get("/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self' 'sha256-" in policy
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert (await http.post(f"/api/reviews/{review_id}/approve", headers=auth("ana"), json={})).status_code == 200
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED
