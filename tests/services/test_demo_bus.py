"""`make demo`'s scenario on the real bus: every claim ends where the README says, signed end to end."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

import pytest
from tests.fixtures.stack import Stack

from handrail.messages import TaskResult, TaskStatus
from handrail_dev import demo

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

TOKENS = {name: secrets.token_urlsafe(24) for name in ("ana", "dan", "dora")}


@pytest.fixture(scope="module")
def stack_process_env() -> dict[str, dict[str, str]]:
    return {"human-review": {"HANDRAIL_REVIEWER_TOKENS": json.dumps(TOKENS)}}


async def test_every_demo_claim_ends_where_it_should(stack: Stack) -> None:
    review = stack.processes["human-review"]
    reviewers = demo.Reviewers(f"http://127.0.0.1:{review.http_port}", TOKENS)
    assert await demo._scenario(stack.bootstrap, stack.topics, reviewers) == 0


@pytest.mark.parametrize(
    ("output", "outcome"),
    [
        ({"decision": "approved", "required_approver": "none"}, "approved"),
        # a claim a manager approved after the step: the review adds its escalation
        (
            {"decision": "needs_approval", "required_approver": "manager", "escalation": {"role": "manager"}},
            "needs_approval:manager",
        ),
        # directors approve the ledger call before it runs: the answer names who had to approve
        ({"decision": "needs_approval", "required_approver": "director"}, "needs_approval:director"),
    ],
)
def test_the_summary_names_who_had_to_approve(output: dict[str, object], outcome: str) -> None:
    result = TaskResult(
        message_id="m", task_id="t", workflow="expense-approval", status=TaskStatus.COMPLETED, output=output,
        steps=2, tokens=1, cost_usd=0.0, finished_at=datetime.now(UTC),
    )  # fmt: skip
    assert demo._outcome(result) == outcome
