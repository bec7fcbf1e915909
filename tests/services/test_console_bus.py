"""The task console on real Kafka, Redis and HTTP: tasks run through the stack and are read back through the
console's API and its page in a headless Chromium (a screenshot is kept, ``tests.fixtures.browser``).

Runs on the review tests' stack config (their workflows, reviewers and tokens), with a trace link template.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium, screenshot_path
from tests.fixtures.stack import Stack
from tests.services.test_review_bus import (
    TOKENS,
    auth,
    claim,
    new_id,
    pending_review,
    review_env,
    review_url,
    # That module's config (its workflows, reviewers and tokens) as a fixture: imported, it serves this module's stack.
    stack_config_dir,  # noqa: F401
)

from handrail.client import HandrailClient
from handrail.messages import TaskStatus
from handrail.state import connect_redis

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

TRACE_TEMPLATE = "http://traces.example/trace/{trace_id}?task={task_id}"


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {**review_env(), "HANDRAIL_TRACE_URL_TEMPLATE": TRACE_TEMPLATE}


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=review_url(stack), timeout=30, headers=auth("ops")) as client:
        yield client


async def tasks(http: httpx.AsyncClient, **params: str | int) -> dict[str, Any]:
    response = await http.get("/api/tasks", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def indexed(http: httpx.AsyncClient, task_id: str, status: str, timeout_s: float = 30) -> dict[str, Any]:
    """The task's console entry, once the index has it in ``status`` (the audit topic is followed live)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await http.get(f"/api/tasks/{task_id}")
        if response.status_code == 200 and response.json()["status"] == status:
            return dict(response.json())
        assert response.status_code in (200, 404), response.text
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} not indexed as {status} in {timeout_s}s: {response.text[:500]}")
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def ran(stack: Stack) -> dict[str, str]:
    """Three tasks through the stack: one completed, one rejected by a reviewer, one dead-lettered at intake."""
    async with HandrailClient(stack.bootstrap, stack.topics.prefix) as client, httpx.AsyncClient(
        base_url=review_url(stack), timeout=30, headers=auth("ops")
    ) as http:  # fmt: skip
        # One after the other, so that they were opened in this order.
        done = await client.submit("expense-approval", claim(120), task_id=new_id("c-done"))
        assert (await client.wait_for_result(done, timeout_s=60)).status == TaskStatus.COMPLETED
        refused = await client.submit("expense-approval", claim(1200), task_id=new_id("c-refused"))
        review = await pending_review(http, refused)
        garbage = new_id("c-garbage")
        await client.publish_raw(json.dumps({"task_id": garbage, "workflow": 7}).encode(), key=garbage)
        rejected = await http.post(
            f"/api/reviews/{review['review_id']}/reject", headers=auth("ana"), json={"reason": "no receipt"}
        )
        assert rejected.status_code == 200, rejected.text
        assert (await client.wait_for_result(refused, timeout_s=60)).status == TaskStatus.REJECTED
        assert (await client.wait_for_result(garbage, timeout_s=60)).status == TaskStatus.REJECTED
        for task_id, status in ((done, "completed"), (refused, "rejected"), (garbage, "rejected")):
            await indexed(http, task_id, status)
    return {"done": done, "refused": refused, "garbage": garbage}


async def test_tasks_are_listed_with_filters_and_pages(ran: dict[str, str], http: httpx.AsyncClient) -> None:
    done, refused, garbage = ran["done"], ran["refused"], ran["garbage"]
    mine = set(ran.values())

    def ids(page: dict[str, Any]) -> list[str]:
        return [t["task_id"] for t in page["tasks"] if t["task_id"] in mine]

    everything = await tasks(http)
    assert ids(everything) == [garbage, refused, done], "the latest opened first"
    assert everything["total"] >= 3
    assert ids(await tasks(http, status="completed")) == [done]
    assert ids(await tasks(http, status="rejected")) == [garbage, refused]
    assert ids(await tasks(http, workflow="expense-approval")) == [refused, done]
    assert ids(await tasks(http, workflow="expense-approval", status="rejected")) == [refused]
    assert ids(await tasks(http, agent="expense-approver")) == [refused, done]
    assert ids(await tasks(http, q=done[:12])) == [done], "a task id prefix"
    assert ids(await tasks(http, q="no receipt")) == [refused], "the reason of the task's end"

    # Paging: one task a page, each once, in order.
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 1, "workflow": "expense-approval"}
    for _ in range(50):
        page = await tasks(http, **params)
        seen += ids(page)
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen[-2:] == [refused, done] and len(seen) == len(set(seen))

    [summary] = [t for t in everything["tasks"] if t["task_id"] == done]
    assert summary["workflow"] == "expense-approval" and summary["agents"] == ["expense-intake", "expense-approver"]
    assert summary["steps"] >= 2 and summary["tokens"] > 0 and summary["ended_at"] is not None


async def test_a_task_opens_as_its_timeline_with_a_trace_link(ran: dict[str, str], http: httpx.AsyncClient) -> None:
    task = await indexed(http, ran["done"], "completed")
    actions = [e["action"] for e in task["timeline"]]
    assert actions[0] == "task.opened" and actions[-1] == "task.completed", actions
    hops = [e for e in task["timeline"] if e["kind"] == "hop"]
    assert [h["actor"] for h in hops] == ["agent:expense-intake", "agent:expense-approver"]
    assert all(h["details"]["patch"] for h in hops), "each hop with its diff"
    calls = [d for h in hops for d in h["details"]["decisions"]]
    assert {d["kind"] for d in calls} == {"model_call", "tool_call"}, calls
    assert task["trace_id"] and task["trace_url"] == TRACE_TEMPLATE.format(
        trace_id=task["trace_id"], task_id=ran["done"]
    )

    refused = await indexed(http, ran["refused"], "rejected")
    reviews = [e for e in refused["timeline"] if e["kind"] == "review"]
    assert [e["action"] for e in reviews] == ["review.requested", "review.rejected"]
    assert reviews[-1]["actor"] == "reviewer:ana" and reviews[-1]["reason"] == "no receipt"

    garbage = await indexed(http, ran["garbage"], "rejected")
    assert garbage["dead_letters"] >= 1
    assert "dead_letter" in {e["kind"] for e in garbage["timeline"]}


async def test_dead_letters_are_listed_with_their_reasons(ran: dict[str, str], http: httpx.AsyncClient) -> None:
    response = await http.get("/api/dead-letters", params={"task_id": ran["garbage"]})
    assert response.status_code == 200, response.text
    [letter] = response.json()["dead_letters"]
    assert letter["error_type"] == "malformed_message" and letter["reason"]
    assert letter["source_topic"].endswith("tasks") and letter["service"] == "router"
    listed = await http.get("/api/dead-letters", params={"limit": 200})
    assert ran["garbage"] in {d["task_id"] for d in listed.json()["dead_letters"]}
    assert listed.json()["total"] >= 1


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/api/tasks", {"status": "nope"}, "query.status"),
        ("/api/tasks", {"limit": 0}, "query.limit"),
        ("/api/tasks", {"since": "yesterday"}, "query.since"),
        ("/api/tasks", {"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "is after until"),
        ("/api/tasks", {"cursor": "not-a-cursor"}, "query.cursor"),
        ("/api/tasks", {"colour": "red"}, "colour"),
        ("/api/dead-letters", {"limit": 201}, "query.limit"),
        ("/api/dead-letters", {"cursor": "@@"}, "query.cursor"),
        ("/api/tasks", {"cursor": "12"}, "query.cursor"),
    ],
)
async def test_bad_parameters_answer_422_saying_what_is_wrong(
    http: httpx.AsyncClient, path: str, params: dict[str, str | int], says: str
) -> None:
    response = await http.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request" and says in response.json()["detail"], response.text


async def test_unknown_tasks_repeats_and_missing_tokens_are_refused(http: httpx.AsyncClient) -> None:
    unknown = await http.get("/api/tasks/no-such-task")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    repeated = await http.get("/api/tasks?status=running&status=failed")
    assert repeated.status_code == 422 and "status given more than once" in repeated.json()["detail"]
    anonymous = await http.get("/api/tasks", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthenticated"
    document = (await http.get("/api/openapi.json")).json()
    assert {"/api/tasks", "/api/tasks/{task_id}", "/api/dead-letters"} <= set(document["paths"])
    params = {p["name"] for p in document["paths"]["/api/tasks"]["get"]["parameters"]}
    assert {"status", "workflow", "agent", "since", "until", "q", "cursor", "limit"} <= params
    page = await http.get("/console")
    assert page.status_code == 200 and "script-src 'self' 'sha256-" in page.headers["content-security-policy"]


async def test_the_index_is_rebuilt_from_kafka_when_redis_lost_it(
    ran: dict[str, str], stack: Stack, http: httpx.AsyncClient
) -> None:
    before = await indexed(http, ran["done"], "completed")
    redis = connect_redis(stack.redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{stack.env['HANDRAIL_REDIS_PREFIX']}{{console}}*")]
        assert keys
        await redis.unlink(*keys)  # the index and the projector's offsets: as if Redis had lost them
    finally:
        await redis.aclose()
    assert (await http.get(f"/api/tasks/{ran['done']}")).status_code == 404
    stack.stop("human-review")
    stack.start("human-review")
    after = await indexed(http, ran["done"], "completed")
    assert after == before, "the same summary and timeline, read again from the audit topic"
    letters = await http.get("/api/dead-letters", params={"task_id": ran["garbage"]})
    assert len(letters.json()["dead_letters"]) == 1


async def test_the_page_filters_opens_a_timeline_and_lists_dead_letters(ran: dict[str, str], stack: Stack) -> None:
    require_chromium()
    from playwright.async_api import async_playwright, expect

    base = review_url(stack)
    done, refused, garbage = ran["done"], ran["refused"], ran["garbage"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            problems: list[str] = []
            # Script errors, and answers the page got that are not what it asked for (the browser's own favicon
            # request aside: there is none).
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "response",
                lambda r: (
                    problems.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico")
                    else None
                ),
            )

            # A filtered address opens filtered.
            await page.goto(f"{base}/console?workflow=expense-approval")
            await page.fill("#token", TOKENS["ana"])
            await page.click("#login")
            await expect(page.locator("#whoami")).to_contain_text("Ana Lee")
            await expect(page.locator("#f-workflow")).to_have_value("expense-approval")
            rows = page.locator("#tasks tr")
            await expect(page.locator(f'#tasks tr[data-task-id="{done}"]')).to_be_visible()
            await expect(page.locator(f'#tasks tr[data-task-id="{garbage}"]')).to_have_count(0)

            # Filtering on the page: the status, and the address says so.
            await page.select_option("#f-status", "rejected")
            await expect(page.locator(f'#tasks tr[data-task-id="{done}"]')).to_have_count(0)
            row = page.locator(f'#tasks tr[data-task-id="{refused}"]')
            await expect(row).to_be_visible()
            await expect(row.locator("td.c-reason")).to_contain_text("no receipt")
            assert "status=rejected" in page.url and "workflow=expense-approval" in page.url, page.url
            assert await rows.count() >= 1
            await page.screenshot(path=str(screenshot_path("console-tasks.png")), full_page=True)

            # Into a task: its timeline, hops with their diffs and calls, and the trace link.
            await page.select_option("#f-status", "completed")
            await page.locator(f'#tasks tr[data-task-id="{done}"] a.open').click()
            await expect(page.locator("#t-task")).to_have_text(done)
            await expect(page.locator("#t-status")).to_have_text("completed")
            await expect(page.locator("#timeline li.k-hop")).to_have_count(2)
            first_hop = page.locator("#timeline li.k-hop").first
            await expect(first_hop.locator(".action")).to_have_text("step.completed")
            await expect(first_hop.locator("pre.patch div").first).to_be_visible()
            await expect(first_hop.locator("table.calls tr.call").first).to_be_visible()
            await expect(first_hop.locator(".budget")).to_contain_text("Budget used: 1 of 6 steps")
            await expect(page.locator("#timeline li.k-task").last).to_contain_text("task.completed")
            href = await page.locator("#t-trace").get_attribute("href")
            assert href is not None and href.startswith("http://traces.example/trace/") and done in href, href
            await page.screenshot(path=str(screenshot_path("console-task.png")), full_page=True)

            # Back to the list, still filtered; then the dead letters, and from one to its task.
            await page.click("#back")
            await expect(page.locator("#f-status")).to_have_value("completed")
            await page.click("#tab-dlq")
            letter = page.locator("#dead-letters tr").filter(has_text=garbage)
            await expect(letter.locator("td.c-error-type")).to_have_text("malformed_message")
            await expect(letter.locator("td.c-reason")).not_to_be_empty()
            await page.screenshot(path=str(screenshot_path("console-dead-letters.png")), full_page=True)
            await letter.locator("td.c-task a").click()
            await expect(page.locator("#t-task")).to_have_text(garbage)
            await expect(page.locator("#timeline li.k-dead_letter").first).to_be_visible()

            assert not problems, problems
            # A bad filter is answered with what is wrong.
            await page.goto(f"{base}/console?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z")
            await expect(page.locator("#tasks-error")).to_contain_text("Error 422")
        finally:
            await browser.close()
