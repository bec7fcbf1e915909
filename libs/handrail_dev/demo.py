"""``handrail demo``: the expense-approval and vendor-due-diligence workflows end to end, on real Kafka and Redis.

Starts what is missing (Kafka, Redis, topics, every service), submits a handful
of claims - good ones, and malformed ones - and two vendors (parallel checks, a
voted risk class, a summary revised until it passes; one routed by rule), shows each task's progress as it
happens, plays the reviewers for the claims the policy parks for a person (a
manager approves the laptop; two directors approve the offsite, over the review
service's HTTP API), prints where every task ended and why, then stops what it
started. Exits 0 only when every task ended where it should.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from handrail.client import HandrailClient, follow, open_reader
from handrail.contracts import load_contracts
from handrail.messages import DeadLetter, ReviewRequested, StepCompleted, TaskResult
from handrail.tools import default_registry
from handrail.topics import Topics, ensure_topics
from handrail_dev import DevSettings, services
from handrail_dev import up as infra_up
from handrail_dev.kafka import stop_kafka
from handrail_dev.redis import stop_redis
from handrail_dev.reviewer_tokens import dev_tokens

#: Long enough for a cold JVM broker and cold Python workers on a 2-core machine.
_RESULTS_TIMEOUT_S = 120.0
#: Who decides which review in the demo (reviewers of config/reviewers.yaml), by the role the review needs.
_DEMO_REVIEWERS = {"manager": ["ana"], "director": ["dan", "dora"]}

console = Console(soft_wrap=True)


@dataclass(frozen=True)
class Case:
    """One demo task: what to send, and where it must end."""

    label: str
    expect_status: str
    expect: str  # the decision for a completed task, the error type otherwise
    task_input: dict[str, Any] | None = None
    workflow: str = "expense-approval"
    raw: bytes | None = None  # sent as is instead of a TaskSubmitted


def cases() -> list[Case]:
    def claim(employee: str, amount: float, currency: str, what: str) -> dict[str, Any]:
        return {"employee_id": employee, "amount": amount, "currency": currency, "description": what}

    def vendor(vendor_id: str, name: str, country: str) -> dict[str, Any]:
        return {"vendor_id": vendor_id, "vendor_name": name, "country": country}

    return [
        Case("team lunch, 42.50 EUR", "completed", "approved", claim("E100", 42.5, "EUR", "team lunch")),
        Case("laptop, 1200 USD", "completed", "needs_approval:manager", claim("E101", 1200, "USD", "laptop")),
        Case("offsite, 8000 GBP", "completed", "needs_approval:director", claim("E102", 8000, "GBP", "team offsite")),
        Case("claim by a former employee", "completed", "rejected", claim("E103", 90, "USD", "taxi")),
        Case("unknown employee", "failed", "output_schema_violation", claim("E404", 30, "USD", "books")),
        Case("negative amount", "rejected", "invalid_input", claim("E100", -5, "USD", "refund?")),
        Case("unknown workflow", "rejected", "unknown_workflow", {"anything": 1}, workflow="payroll"),
        Case("not JSON at all", "rejected", "malformed_message", raw=b"<expense amount=12>oops</expense>"),
        # The second workflow: three checks at once, a risk class voted by three samples, a revised summary.
        Case(
            "vendor Acme (3 patterns)",
            "completed",
            "onboard",
            vendor("V100", "Acme Tools", "DE"),
            workflow="vendor-due-diligence",
        ),
        Case(
            "vendor Globex, by rule",
            "completed",
            "onboard",
            {"kind": "vendor", **vendor("V200", "Globex", "FR")},
            workflow="auto",
        ),
    ]


def run_demo(project_dir: Path) -> int:
    """Run the whole demo; return the process exit code."""
    settings = DevSettings()
    started_infra = infra_up(settings)
    for status in started_infra.services:
        console.print(f"[bold]{status.name}[/bold] {status.state} at {status.address}")
    agents = sorted(load_contracts(project_dir / "config", default_registry().names()).agents)
    topics = Topics()
    asyncio.run(ensure_topics(settings.kafka_bootstrap, topics.specs(agents)))
    processes = services.plan(agents, base_port=settings.ports.services)
    already = {name for name, pid in services.running(processes, settings.run_dir).items() if pid is not None}
    console.print(f"starting services: {', '.join(p.name for p in processes if p.name not in already) or 'none'}")
    # The demo plays the reviewers with the local stack's tokens (the same ones `make up` gives the review
    # service, so it can decide on a service already running too).
    tokens, _ = dev_tokens(settings.run_dir, project_dir / "config" / "reviewers.yaml")
    processes = [services.with_reviewer_tokens(p, tokens) for p in processes]
    review = next(p for p in processes if p.name == "human-review")
    review_url = f"http://127.0.0.1:{review.http_port}"
    services.up(processes, settings.run_dir, services.stack_env(settings), project_dir)
    try:
        return asyncio.run(_scenario(settings.kafka_bootstrap, topics, Reviewers(review_url, tokens)))
    finally:
        stopped = services.down([p for p in processes if p.name not in already], settings.run_dir)
        console.print(f"stopped services: {', '.join(stopped) or 'none'}")
        # Only what this demo started: a Kafka or Redis that ran before (`make up`'s) keeps running.
        for status, stop in zip(started_infra.services, (stop_kafka, stop_redis), strict=True):
            if status.changed:
                stop(settings)
                console.print(f"stopped the {status.name} this demo started")


class Reviewers:
    """The demo's reviewers, deciding over the review service's HTTP API."""

    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        self.url = url
        self.tokens = tokens

    async def approve(self, request: ReviewRequested) -> None:
        """Approve as every demo reviewer of the role the review needs (two directors for a director's)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            for name in _DEMO_REVIEWERS.get(request.role, []):
                headers = {"Authorization": f"Bearer {self.tokens[name]}"}
                path = f"/api/reviews/{request.review_id}"
                for _ in range(100):  # the service indexes the request within moments
                    if (await http.get(path, headers=headers)).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                response = await http.post(f"{path}/approve", headers=headers, json={"reason": "demo: looks right"})
                response.raise_for_status()
                body = response.json()
                console.print(
                    f"[cyan]{request.task_id}[/cyan]   reviewer {name} approved "
                    f"({len(body['approvals'])} of {body['approvals_required']})"
                )


async def _scenario(bootstrap: str, topics: Topics, reviewers: Reviewers) -> int:
    run = uuid.uuid4().hex[:6]
    demo_cases = cases()
    ids = {f"demo-{run}-{i}": case for i, case in enumerate(demo_cases, 1)}
    followed = [topics.steps, topics.results, topics.dlq, topics.reviews_requested]
    reader = await open_reader(bootstrap, followed, from_time_ms=None)
    results: dict[str, TaskResult] = {}
    reasons: dict[str, str] = {}
    try:
        async with HandrailClient(bootstrap, topics.prefix) as client:
            for task_id, case in ids.items():
                if case.raw is not None:
                    await client.publish_raw(case.raw, key=task_id)
                else:
                    await client.submit(case.workflow, case.task_input or {}, task_id=task_id, submitted_by="demo")
                console.print(f"[cyan]{task_id}[/cyan] submitted: {case.label}")
            # Submitting the first claim again must not make a second task.
            first_id, first = next(iter(ids.items()))
            await client.submit(first.workflow, first.task_input or {}, task_id=first_id, submitted_by="demo")
            console.print(f"[cyan]{first_id}[/cyan] submitted again (must be ignored)")
        deadline = time.monotonic() + _RESULTS_TIMEOUT_S
        async for record in follow(reader, idle_timeout_s=_RESULTS_TIMEOUT_S):
            key = (record.key or b"").decode()
            if key not in ids:
                continue
            body = record.value or b""
            if record.topic == topics.steps:
                step = StepCompleted.model_validate_json(body)
                console.print(
                    f"[cyan]{key}[/cyan]   step {step.step!r} done by {step.agent} ({len(step.decisions)} decisions)"
                )
            elif record.topic == topics.reviews_requested:
                request = ReviewRequested.model_validate_json(body)
                console.print(
                    f"[cyan]{key}[/cyan]   [magenta]parked for review[/magenta] by rule {request.rule} "
                    f"({request.approvals_required} x {request.role}): {request.reason}"
                )
                await reviewers.approve(request)
            elif record.topic == topics.dlq:
                letter = DeadLetter.model_validate_json(body)
                reasons[key] = letter.reason
                console.print(
                    f"[cyan]{key}[/cyan]   [yellow]dead-lettered[/yellow] {letter.error_type}: {letter.reason}"
                )
            else:
                result = TaskResult.model_validate_json(body)
                if key in results:
                    console.print(f"[red]{key} got a second result[/red]")
                    return 1
                results[key] = result
                console.print(f"[cyan]{key}[/cyan]   [bold]{result.status}[/bold]")
            if len(results) == len(ids) or time.monotonic() > deadline:
                break
        # Give a duplicate result the chance to show up before declaring success.
        async for record in follow(reader, idle_timeout_s=2.0):
            if record.topic == topics.results and (record.key or b"").decode() in results:
                console.print(f"[red]{record.key!r} got a second result[/red]")
                return 1
    finally:
        await reader.stop()
    return _summary(ids, results)


def _outcome(result: TaskResult) -> str:
    if result.status != "completed":
        return result.error_type or "?"
    output = result.output or {}
    # Who had to approve: the approver's own answer (a director's approval comes before the ledger
    # call, so no step-level escalation is added to the output), else the escalation a review added.
    role = (output.get("escalation") or {}).get("role") or output.get("required_approver")
    role = None if role == "none" else role
    return f"{output.get('decision')}:{role}" if role else str(output.get("decision"))


def _summary(ids: dict[str, Case], results: dict[str, TaskResult]) -> int:
    console.rule("Where every demo task ended")
    failures = 0
    for task_id, case in ids.items():
        result = results.get(task_id)
        got = f"{result.status} {_outcome(result)}" if result else "no result"
        expected = f"{case.expect_status} {case.expect}"
        ok = got == expected
        failures += not ok
        mark = "[green]ok [/green]" if ok else f"[red]BAD (expected {expected})[/red]"
        console.print(f"{mark} {task_id}  {case.label:28} -> {got}", highlight=False)
        if result is not None:
            why = result.reason or _why(result.output or {})
            console.print(f"      why: {_shorten(why)}", highlight=False)
    if failures:
        console.print(f"[red]{failures} task(s) did not end where they should[/red]")
        return 1
    console.print(f"[green]all {len(ids)} tasks ended where they should; the resubmission made no second task[/green]")
    return 0


def _why(output: dict[str, Any]) -> str:
    """Why a completed task ended as it did: the policy's reasons, or a vendor's summary."""
    if "reasons" in output:
        return "; ".join(output["reasons"])
    return f"{output.get('summary')} (risk {output.get('risk_class')}; summary revision {output.get('revision')})"


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
