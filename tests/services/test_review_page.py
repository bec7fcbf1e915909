"""The reviewers' list API and web page: filters, the decided history, auto-refresh, ids to copy.

Runs on the same stack as ``test_review_bus`` (its config, reviewers and tokens): real Kafka,
Redis and HTTP, and the page in a headless Chromium.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.fixtures.stack import Stack
from tests.services.test_limits_bus import ledger_entries
from tests.services.test_review_bus import (
    TOKENS,
    auth,
    claim,
    new_id,
    pending_review,
    review_url,
    show,
    # That module's config (its workflows, reviewers, tokens) as fixtures: imported, they serve this module's stack.
    stack_config_dir,  # noqa: F401
    stack_env,  # noqa: F401
)

from handrail.client import HandrailClient
from handrail.messages import TaskStatus

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

#: Longer than two of the page's 5 s refresh ticks, and the pipeline's time to park a task.
REFRESHED_MS = 20_000


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=review_url(stack), timeout=30) as client:
        yield client


async def listed(http: httpx.AsyncClient, **params: str | int) -> list[dict[str, Any]]:
    response = await http.get("/api/reviews", params=params, headers=auth("ops"))
    assert response.status_code == 200, response.text
    return list(response.json())


def tasks(reviews: list[dict[str, Any]], among: set[str]) -> list[str]:
    """The task ids of ``reviews`` that are among ``among``, in the list's order."""
    return [r["task_id"] for r in reviews if r["task_id"] in among]


async def test_the_list_filters_by_rule_role_and_workflow(
    client: HandrailClient,
    stack: Stack,
    http: httpx.AsyncClient,
) -> None:
    manager = await client.submit("expense-approval", claim(1200), task_id=new_id("f-manager"))
    intake = await client.submit("edit-expense", claim(1500), task_id=new_id("f-intake"))
    typo = await client.submit("broken-rule", claim(20), task_id=new_id("f-typo"))
    ours = {manager, intake, typo}
    reviews = {task_id: await pending_review(http, task_id) for task_id in ours}
    assert {(r["rule"], r["role"]) for r in reviews.values()} == {
        ("manager-approval", "manager"),
        ("large-intake", "manager"),
        ("typo", "reviewer"),
    }

    assert set(tasks(await listed(http), ours)) == ours, "no filter: all of them"
    assert tasks(await listed(http, rule="manager-approval"), ours) == [manager]
    assert tasks(await listed(http, rule="typo"), ours) == [typo]
    assert set(tasks(await listed(http, role="manager"), ours)) == {manager, intake}
    assert tasks(await listed(http, role="reviewer"), ours) == [typo]
    assert tasks(await listed(http, role="director"), ours) == []
    assert tasks(await listed(http, role="manager", workflow="edit-expense"), ours) == [intake]
    assert tasks(await listed(http, role="reviewer", rule="manager-approval"), ours) == [], "every filter must hold"
    assert tasks(await listed(http, rule="manager-approval", status="decided"), ours) == [], "none decided yet"

    for task_id, review in reviews.items():
        decided = await http.post(
            f"/api/reviews/{review['review_id']}/reject", headers=auth("ana"), json={"reason": "x"}
        )
        assert decided.status_code == 200, decided.text
        assert (await client.wait_for_result(task_id, timeout_s=30)).status == TaskStatus.REJECTED


async def test_the_decided_history_says_who_decided_what_it_did_and_when(
    client: HandrailClient,
    stack: Stack,
    http: httpx.AsyncClient,
) -> None:
    first = await client.submit("expense-approval", claim(1100), task_id=new_id("h-first"))
    second = await client.submit("edit-expense", claim(1600), task_id=new_id("h-second"))
    ours = {first, second}
    to_approve = (await pending_review(http, first))["review_id"]
    to_reject = (await pending_review(http, second))["review_id"]
    before = datetime.now(UTC) - timedelta(seconds=1)  # the service's clock, not ours, stamps a decision

    approved = await http.post(f"/api/reviews/{to_approve}/approve", headers=auth("ana"), json={"reason": "receipt ok"})
    assert approved.status_code == 200, approved.text
    assert (await client.wait_for_result(first, timeout_s=30)).status == TaskStatus.COMPLETED
    rejected = await http.post(f"/api/reviews/{to_reject}/reject", headers=auth("max"), json={"reason": "duplicate"})
    assert rejected.status_code == 200, rejected.text
    assert (await client.wait_for_result(second, timeout_s=30)).status == TaskStatus.REJECTED

    assert tasks(await listed(http), ours) == [], "decided reviews are out of the queue"
    history = [r for r in await listed(http, status="decided") if r["task_id"] in ours]
    assert [r["task_id"] for r in history] == [second, first], "the latest decision first"
    newer, older = history
    assert (older["status"], older["decided_by"], older["decision_reason"], older["outcome"]) == (
        "approved",
        "reviewer:ana",
        "receipt ok",
        "completed",
    )
    assert (newer["status"], newer["decided_by"], newer["decision_reason"]) == ("rejected", "reviewer:max", "duplicate")
    assert newer["outcome"] == rejected.json()["outcome"] is not None
    newer_at, older_at = (datetime.fromisoformat(r["decided_at"]) for r in history)
    assert before <= older_at <= newer_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert older_at >= datetime.fromisoformat(older["requested_at"])

    # Filtered, the history looks past later decisions that do not match (here: `second`).
    latest_claim = await listed(http, status="decided", workflow="expense-approval", limit=1)
    assert [r["review_id"] for r in latest_claim] == [to_approve]
    assert tasks(await listed(http, status="decided", rule="large-intake"), ours) == [second]
    assert tasks(await listed(http, status="decided", role="manager"), ours) == [second, first]


async def test_role_is_the_current_role_after_an_escalation(
    client: HandrailClient,
    stack: Stack,
    http: httpx.AsyncClient,
) -> None:
    task_id = await client.submit("quick-expense", claim(1200), task_id=new_id("f-escalated"))
    assert (await pending_review(http, task_id))["role"] == "manager"
    # Nobody decides: after 1.5 s it goes to a director, and after 1.5 s more it is rejected.
    assert (await client.wait_for_result(task_id, timeout_s=30)).status == TaskStatus.REJECTED
    [escalated] = [r for r in await listed(http, status="decided", role="director") if r["task_id"] == task_id]
    assert escalated["level"] == 1 and escalated["decided_by"] == "service:human-review"
    assert tasks(await listed(http, status="decided", role="manager"), {task_id}) == [], "manager was its first role"


async def test_bad_list_parameters_answer_422_saying_what_is_wrong(http: httpx.AsyncClient) -> None:
    problems = {
        "status=nope": "query.status: Input should be 'pending' or 'decided'",
        "role=boss": "query.role: there is no role 'boss' (roles: director, manager, reviewer)",
        "rule=": "query.rule: String should have at least 1 character",
        "workflow=": "query.workflow: String should have at least 1 character",
        "stauts=decided": "query.stauts: Extra inputs are not permitted",
        "min_age_s=soon": "query.min_age_s: Input should be a valid number",
        "max_age_s=-1": "query.max_age_s: Input should be greater than or equal to 0",
        "min_age_s=10&max_age_s=1": "min_age_s (10) is above max_age_s (1): nothing can match",
        "limit=0": "query.limit: Input should be greater than or equal to 1",
        "limit=many": "query.limit: Input should be a valid integer",
        "trigger=whim": "query.trigger: Input should be 'rule', 'tool_approval'",
    }
    for query, problem in problems.items():
        response = await http.get(f"/api/reviews?{query}", headers=auth("ops"))
        assert response.status_code == 422, (query, response.text)
        body = response.json()
        assert body["error"] == "invalid_request" and problem in body["detail"], (query, body)
    good = await http.get(
        "/api/reviews?status=decided&role=director&rule=r&workflow=w&trigger=halt", headers=auth("ops")
    )
    assert good.status_code == 200 and good.json() == [], good.text
    anonymous = await http.get("/api/reviews?status=nope")
    assert anonymous.status_code == 401, "who asks is checked before what they ask"
    openapi = (await http.get("/api/openapi.json")).json()
    params = {p["name"] for p in openapi["paths"]["/api/reviews"]["get"]["parameters"]}
    assert {"status", "workflow", "rule", "role", "reason", "trigger", "limit"} <= params


async def test_the_page_filters_refreshes_by_itself_and_shows_the_decided_history(
    client: HandrailClient,
    stack: Stack,
    http: httpx.AsyncClient,
) -> None:
    require_chromium()
    from playwright.async_api import Page, async_playwright, expect

    base = review_url(stack)
    claim_task = await client.submit("expense-approval", claim(1200), task_id=new_id("p-claim"))
    typo_task = await client.submit("broken-rule", claim(20), task_id=new_id("p-typo"))
    claim_review = (await pending_review(http, claim_task))["review_id"]
    typo_review = (await pending_review(http, typo_task))["review_id"]

    def row(page: Page, task_id: str) -> Any:
        return page.locator(f'#queue tr[data-task-id="{task_id}"]')

    async def log_in(page: Page) -> None:
        await page.fill("#token", TOKENS["ana"])
        await page.click("#login")
        await expect(page.locator("#whoami")).to_contain_text("Ana Lee (manager)")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
            page = await context.new_page()

            # A filtered address opens filtered, and the filters say so.
            await page.goto(f"{base}/?role=reviewer&workflow=broken-rule")
            await log_in(page)
            await expect(page.locator("#f-role")).to_have_value("reviewer")
            await expect(page.locator("#f-workflow")).to_have_value("broken-rule")
            await expect(row(page, typo_task)).to_be_visible()
            await expect(row(page, claim_task)).to_have_count(0)
            # Ids whole, selectable, with a title and a copy button.
            review_cell = row(page, typo_task).locator("td.c-review")
            await expect(review_cell.locator("code.id")).to_have_text(typo_review)
            await expect(review_cell.locator("code.id")).to_have_attribute("title", typo_review)
            await expect(row(page, typo_task).locator("td.c-task code.id")).to_have_text(typo_task)
            await expect(row(page, typo_task).locator("td.c-rule")).to_have_text("typo")

            # Filtering on the page puts the filters in the address.
            await page.fill("#f-role", "manager")
            await page.fill("#f-workflow", "expense-approval")
            await page.fill("#f-rule", "manager-approval")
            await page.press("#f-rule", "Enter")
            await expect(row(page, claim_task)).to_be_visible()
            await expect(row(page, typo_task)).to_have_count(0)
            assert re.search(r"[?&]role=manager(&|$)", page.url) and "rule=manager-approval" in page.url, page.url
            assert "workflow=expense-approval" in page.url, page.url

            # A review that comes in shows up by itself: no reload (the marker would be gone).
            await page.evaluate("window.notReloaded = true")
            new_task = await client.submit("expense-approval", claim(1300), task_id=new_id("p-new"))
            await expect(row(page, new_task)).to_be_visible(timeout=REFRESHED_MS)
            assert await page.evaluate("window.notReloaded") is True
            # ...unless auto-refresh is off; on again, it shows up.
            await page.uncheck("#auto-refresh")
            quiet_task = await client.submit("expense-approval", claim(1400), task_id=new_id("p-quiet"))
            await pending_review(http, quiet_task)
            await asyncio.sleep(6)  # longer than a refresh tick
            await expect(row(page, quiet_task)).to_have_count(0)
            await page.check("#auto-refresh")
            await expect(row(page, quiet_task)).to_be_visible(timeout=REFRESHED_MS)

            # An open review and a half-typed reason survive the refreshes...
            await row(page, new_task).locator("a.open").click()
            await expect(page.locator("#d-task")).to_have_text(new_task)
            await expect(page.locator("#d-proposal")).to_be_hidden()  # a step's review, not a call's
            await expect(page.locator("#edit-toggle")).to_have_text("Edit context…")
            await page.fill("#reason", "half-typed reas")
            seen = await page.locator("#refreshed").text_content()
            await expect(page.locator("#refreshed")).not_to_have_text(seen or "", timeout=REFRESHED_MS)
            await expect(page.locator("#d-task")).to_have_text(new_task)
            await expect(page.locator("#reason")).to_have_value("half-typed reas")
            await expect(page.locator("#decide")).to_be_visible()
            # ...and a decision someone else takes meanwhile is shown, the reason still kept.
            new_review = (await pending_review(http, new_task))["review_id"]
            by_max = await http.post(f"/api/reviews/{new_review}/approve", headers=auth("max"), json={})
            assert by_max.status_code == 200, by_max.text
            await expect(page.locator("#status")).to_contain_text(
                "Decided meanwhile by reviewer:max: approved", timeout=REFRESHED_MS
            )
            await expect(page.locator("#reason")).to_have_value("half-typed reas")
            await expect(page.locator("#decide")).to_be_hidden()

            # Back to the (still filtered) list, and a decision on the page.
            await page.click("#back")
            await expect(row(page, new_task)).to_have_count(0, timeout=REFRESHED_MS)
            await row(page, claim_task).locator("a.open").click()
            await expect(page.locator("#d-task")).to_have_text(claim_task)
            await expect(page.locator("#reason")).to_have_value(
                "", timeout=1000
            )  # another review: nothing carried over
            await page.fill("#reason", "receipt attached")
            await page.click("#approve")
            await expect(page.locator("#status")).to_have_text("Decided: approved, task completed")

            # The decided history: who, what it did, when; the latest first.
            await page.click("#back")
            await page.select_option("#f-status", "decided")
            await expect(page.locator("#list-title")).to_have_text("Decided reviews")
            assert "status=decided" in page.url and "rule=manager-approval" in page.url, page.url
            first, second = page.locator("#queue tr").nth(0), page.locator("#queue tr").nth(1)
            await expect(first).to_have_attribute("data-task-id", claim_task)
            await expect(second).to_have_attribute("data-task-id", new_task)
            await expect(first.locator("td.c-decided_by")).to_have_text("reviewer:ana")
            await expect(first.locator("td.c-decision")).to_have_text("approved: receipt attached")
            await expect(first.locator("td.c-outcome")).to_have_text("completed")
            await expect(first.locator("td.c-decided_at")).to_have_text(re.compile(r"\d{1,2}:\d{2}"))
            await expect(second.locator("td.c-decided_by")).to_have_text("reviewer:max")
            await expect(second.locator("td.c-outcome")).to_have_text("completed", timeout=REFRESHED_MS)
            await expect(row(page, quiet_task)).to_have_count(0)
            await expect(row(page, typo_task)).to_have_count(0)
            await expect(first.locator("td.c-review code.id")).to_have_text(claim_review)

            # The copy button copies the whole id.
            await first.locator("td.c-task button.copy").click()
            await expect(first.locator("td.c-task button.copy")).to_have_text("copied")
            assert await page.evaluate("navigator.clipboard.readText()") == claim_task

            # The address is the view: opened elsewhere (another session), it shows the same.
            shared = page.url
            elsewhere = await (await browser.new_context()).new_page()
            await elsewhere.goto(shared)
            await log_in(elsewhere)
            await expect(elsewhere.locator("#list-title")).to_have_text("Decided reviews")
            await expect(elsewhere.locator("#f-status")).to_have_value("decided")
            await expect(elsewhere.locator("#f-rule")).to_have_value("manager-approval")
            await expect(row(elsewhere, claim_task).locator("td.c-decided_by")).to_have_text("reviewer:ana")
            await expect(row(elsewhere, typo_task)).to_have_count(0)
            # A bad filter in the address is answered with what is wrong, not an empty list.
            await elsewhere.goto(f"{base}/?role=boss")
            await expect(elsewhere.locator("#list-error")).to_contain_text(
                "Error 422: query.role: there is no role 'boss'"
            )
        finally:
            await browser.close()

    assert (await client.wait_for_result(claim_task, timeout_s=30)).status == TaskStatus.COMPLETED
    for task_id in (typo_task, quiet_task):
        review = await pending_review(http, task_id)
        done = await http.post(f"/api/reviews/{review['review_id']}/reject", headers=auth("ana"), json={"reason": "x"})
        assert done.status_code == 200, done.text


#: What the page says a rejection of a proposed call does, by its `on_reject`.
ON_REJECT = {
    "end": "rejecting ends the task; the call never runs",
    "refuse": "rejecting tells the agent the call was refused",
}


async def test_directors_approve_a_proposed_call_on_the_page_and_it_runs_once(
    client: HandrailClient,
    stack: Stack,
    http: httpx.AsyncClient,
) -> None:
    """The ledger entry of a claim above 5000 USD waits for two directors: the page shows the call and its key."""
    require_chromium()
    from playwright.async_api import async_playwright, expect

    task_id = await client.submit("expense-approval", claim(8000, "GBP"), task_id=new_id("p-call"))
    summary = await pending_review(http, task_id)
    assert summary["proposed_tool"] == "record_decision", summary
    review_id = summary["review_id"]
    proposal = (await show(http, review_id))["proposal"]
    arguments = proposal["arguments"]

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(review_url(stack) + "/")
            await page.fill("#token", TOKENS["dan"])
            await page.click("#login")
            await expect(page.locator("#whoami")).to_contain_text("Dan Ode (director)")

            # The queue marks it as a call waiting for approval.
            row = page.locator(f'#queue tr[data-task-id="{task_id}"]')
            await expect(row).to_have_attribute("data-proposed-tool", "record_decision")
            await expect(row.locator("td.c-why .badge")).to_have_text("proposed call: record_decision")
            await row.locator("a.open").click()
            await expect(page.locator("#d-id")).to_have_text(review_id)

            # The call, before the context: the tool, its arguments, why it waits, its key, what a reject does.
            await expect(page.locator("#d-proposal")).to_be_visible()
            assert await page.evaluate(
                "$('d-proposal').compareDocumentPosition($('d-context')) & Node.DOCUMENT_POSITION_FOLLOWING"
            ), "the proposed call comes before the context"
            await expect(page.locator("#d-proposal-tool")).to_have_text("record_decision")
            shown = json.loads(await page.locator("#d-proposal-args").text_content() or "")
            assert shown == arguments and shown["decision"] == "needs_approval", shown
            await expect(page.locator("#d-proposal-why")).to_have_text(proposal["why"])
            await expect(page.locator("#d-proposal-reason")).to_have_text(
                proposal["model_reason"] or "(the model gave none)"
            )
            await expect(page.locator("#d-proposal-key")).to_have_text(proposal["idempotency_key"])
            await expect(page.locator("#d-proposal-on-reject")).to_have_text(ON_REJECT[proposal["on_reject"]])

            # An edit is of the call's arguments; ones the tool's schema refuses are shown by the box.
            await page.click("#edit-toggle")
            await expect(page.locator("#edit-toggle")).to_have_text("Edit arguments…")
            assert json.loads(await page.locator("#edit-document").input_value()) == arguments
            await page.fill("#edit-document", json.dumps({**arguments, "amount_usd": "lots"}))
            await page.click("#edit-approve")
            await expect(page.locator("#edit-error")).to_contain_text(
                "Error 422: the edited arguments of record_decision"
            )
            await expect(page.locator("#edit-error")).to_contain_text("amount_usd")
            await page.fill("#edit-document", "{not json")
            await page.click("#edit-approve")
            await expect(page.locator("#edit-error")).to_contain_text("The arguments are not valid JSON")
            untouched = await show(http, review_id)
            assert (untouched["status"], untouched["approvals"], untouched["edit"], untouched["records"]) == (
                "pending",
                [],
                None,
                [],
            ), "a refused edit changes nothing"
            await expect(page.locator("#d-approvals")).to_have_text("0 of 2")

            # Dan approves on the page; the call still waits for a second director.
            await page.fill("#reason", "budget line checked")
            await page.click("#approve")
            await expect(page.locator("#status")).to_have_text("Recorded: 1 of 2 approvals.")
            await expect(page.locator("#edit-error")).to_have_text("")
            assert ledger_entries(stack, task_id) == [], "one of two directors is not enough"

            # Dora approves over HTTP; the open page follows.
            by_dora = await http.post(f"/api/reviews/{review_id}/approve", headers=auth("dora"), json={})
            assert by_dora.status_code == 200, by_dora.text
            await expect(page.locator("#status")).to_contain_text(
                "Decided meanwhile by reviewer:dora: approved", timeout=REFRESHED_MS
            )
            await expect(page.locator("#d-records")).to_contain_text("reviewer:dan approve: budget line checked")
        finally:
            await browser.close()

    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.COMPLETED, result
    [entry] = ledger_entries(stack, task_id)
    assert entry["idempotency_key"] == proposal["idempotency_key"], "the call that ran is the one approved"
