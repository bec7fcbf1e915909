"""What the running stack must do, checked from the host over the published ports."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka.errors import KafkaError
from tools.compose_test import ComposeTestFailed

from handrail.client import HandrailClient, ResultTimeout
from handrail.errors import HandrailError

WORKFLOW = "expense-approval"
# A task crosses four services and two agents; a cold consumer group may take a few seconds to join.
_RESULT_TIMEOUT_S = 120.0
_REVIEW_TIMEOUT_S = 90.0


def claim(employee: str, amount: float, currency: str, what: str) -> dict[str, Any]:
    return {"employee_id": employee, "amount": amount, "currency": currency, "description": what}


#: Claims the policy approves by itself (under 500 USD), from the demo's employees.
AUTOMATIC = [
    claim("E100", 42.5, "EUR", "team lunch"),
    claim("E101", 120, "USD", "train"),
    claim("E102", 60, "GBP", "taxi"),
]
#: 500-5000 USD: parked for a manager's review (config/workflows.yaml).
NEEDS_A_MANAGER = claim("E101", 1200, "USD", "laptop")


@dataclass(frozen=True)
class Target:
    """Where the stack is published: Kafka's external listener, the review service, a manager's token."""

    bootstrap: str
    review_url: str
    manager: str
    manager_token: str


async def _result(client: HandrailClient, task_id: str, what: str) -> None:
    try:
        result = await client.wait_for_result(task_id, timeout_s=_RESULT_TIMEOUT_S)
    except ResultTimeout:
        raise ComposeTestFailed(f"{what} (task {task_id}): no result within {_RESULT_TIMEOUT_S:g} s") from None
    if result.status != "completed":
        raise ComposeTestFailed(f"{what} (task {task_id}) ended {result.status}: {result.error_type}")


async def _pending_review(http: httpx.AsyncClient, task_id: str) -> str:
    deadline = time.monotonic() + _REVIEW_TIMEOUT_S
    while time.monotonic() < deadline:
        response = await http.get("/api/reviews", params={"status": "pending", "workflow": WORKFLOW})
        if response.status_code != 200:
            raise ComposeTestFailed(f"GET /api/reviews: {response.status_code} {response.text[:300]}")
        for review in response.json():
            if review["task_id"] == task_id:
                return str(review["review_id"])
        await asyncio.sleep(1.0)
    raise ComposeTestFailed(f"task {task_id} was not parked for review within {_REVIEW_TIMEOUT_S:g} s")


async def check(target: Target, say: Any = print) -> None:
    """Submit claims, check their results, and decide one review over the HTTP API."""
    try:
        await _check(target, say)
    except (HandrailError, KafkaError) as exc:
        raise ComposeTestFailed(f"Kafka at {target.bootstrap}: {exc}") from None
    except httpx.HTTPError as exc:
        raise ComposeTestFailed(f"the review service at {target.review_url}: {exc!r}") from None


async def _check(target: Target, say: Any) -> None:
    headers = {"Authorization": f"Bearer {target.manager_token}"}
    async with (
        HandrailClient(target.bootstrap) as client,
        httpx.AsyncClient(base_url=target.review_url, headers=headers, timeout=30.0) as http,
    ):
        started = time.monotonic()
        tasks = {await client.submit(WORKFLOW, c, submitted_by="compose-test"): c for c in AUTOMATIC}
        for task_id, submitted in tasks.items():
            await _result(client, task_id, submitted["description"])
        say(f"{len(tasks)} claims completed ({time.monotonic() - started:.0f} s)")

        task_id = await client.submit(WORKFLOW, NEEDS_A_MANAGER, submitted_by="compose-test")
        review_id = await _pending_review(http, task_id)
        response = await http.post(f"/api/reviews/{review_id}/approve", json={"reason": "compose-test: looks right"})
        if response.status_code != 200:
            raise ComposeTestFailed(f"approving review {review_id}: {response.status_code} {response.text[:300]}")
        await _result(client, task_id, NEEDS_A_MANAGER["description"])
        say(f"review {review_id} approved by {target.manager}, its task completed")
