"""The review API fuzzed from its own OpenAPI document (schemathesis), on a running stack.

Every operation gets generated requests, valid and invalid, with a director's token.
Every check schemathesis has must pass: no 5xx, only documented status codes and content
types, responses that match their schemas (error bodies included), invalid requests
refused and valid ones accepted.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from tests.fixtures.stack import Stack

from handrail.client import HandrailClient

pytestmark = [pytest.mark.bus, pytest.mark.timeout(600)]

TOKEN = secrets.token_urlsafe(24)
#: Generated requests per operation and mode.
MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def stack_process_env() -> dict[str, dict[str, str]]:
    return {"human-review": {"HANDRAIL_REVIEWER_TOKENS": json.dumps({"dan": TOKEN})}}


@pytest.fixture(scope="module")
def review_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.processes['human-review'].http_port}"


@pytest.fixture(scope="module")
async def parked_review(stack: Stack, review_url: str) -> str:
    """A real pending review, so the fuzzer also meets an id that exists."""
    async with HandrailClient(stack.bootstrap, stack.topics.prefix) as client:
        task_id = await client.submit(
            "expense-approval",
            {"employee_id": "E102", "amount": 2000, "currency": "USD", "description": "monitor"},
            task_id=f"fuzz-{uuid.uuid4().hex[:8]}",
        )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=review_url, headers=headers, timeout=10) as http:
        for _ in range(300):
            reviews = (await http.get("/api/reviews")).json()
            if any(r["task_id"] == task_id for r in reviews):
                return str(next(r["review_id"] for r in reviews if r["task_id"] == task_id))
            await asyncio.sleep(0.2)
    raise AssertionError(f"{task_id} was never parked for review")


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_the_review_api_keeps_its_openapi_document(
    review_url: str, parked_review: str, mode: schemathesis.GenerationMode
) -> None:
    api = schemathesis.openapi.from_url(f"{review_url}/api/openapi.json")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    failures: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 7, [o.label for o in operations]
    for operation in operations:

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            if "review_id" in (case.path_parameters or {}) and case.path_parameters["review_id"] == "known":
                case.path_parameters["review_id"] = parked_review
            ages = [(case.query or {}).get(bound) for bound in ("min_age_s", "max_age_s")]
            impossible = all(isinstance(a, int | float) for a in ages) and ages[0] > ages[1]
            span = [_instant((case.query or {}).get(bound)) for bound in ("since", "until")]
            impossible |= span[0] is not None and span[1] is not None and span[0] > span[1]
            # An age range no review can be in (a time span no task can be in) is refused with a 422 that says
            # so: a rule across two fields, which JSON Schema cannot state, so it is the one valid-looking
            # request refused.
            excluded = [positive_data_acceptance] if impossible else []
            # A parameter generated as an empty list is sent as no parameter at all, so the request that arrives
            # may be a valid one: it is not held against the API that it was accepted.
            if any(value == [] for value in (case.query or {}).values()):
                excluded.append(negative_data_rejection)
            case.call_and_validate(headers=headers, excluded_checks=excluded)

        try:
            check()
        except Exception as failure:
            failures.append(f"{operation.label}:\n{failure}")
    assert not failures, "\n\n".join(failures)


def _instant(value: object) -> datetime | None:
    """A generated ``since`` / ``until`` as the API reads it (no zone: UTC), or None when it is not a time."""
    try:
        moment = datetime.fromisoformat(str(value)) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment
