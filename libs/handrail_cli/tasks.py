"""``handrail submit`` and ``handrail watch``."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from handrail.client import HandrailClient, follow, open_reader
from handrail.messages import TaskResult
from handrail_cli.common import JsonOption, console, err_console, parse_json_object, print_json_lines, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings


def submit(
    workflow: str = typer.Option(..., "--workflow", "-w", help="The workflow to run."),
    task_input: str = typer.Option(..., "--input", "-i", help="The input: a JSON object, or @file.json."),
    task_id: str = typer.Option(None, "--task-id", help="Your id for the task (default: a fresh uuid)."),
    submitted_by: str = typer.Option(None, "--submitted-by", help="Who submits it."),
    deadline_s: float = typer.Option(None, "--deadline-s", min=0.001, help="Wall-clock budget in seconds."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result and print it."),
    timeout_s: float = typer.Option(60.0, "--timeout-s", min=0.1, help="How long --wait waits."),
    bootstrap: str = typer.Option(None, help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."),
) -> None:
    """Submit a task; print its id (and, with --wait, its result)."""
    settings = CliSettings()
    data = parse_json_object(task_input, "--input")

    async def go() -> TaskResult | None:
        async with HandrailClient(
            bootstrap or settings.kafka_bootstrap, settings.topic_prefix, credentials=settings.kafka_credentials()
        ) as client:
            tid = await client.submit(workflow, data, task_id=task_id, submitted_by=submitted_by, deadline_s=deadline_s)
            console.print(tid, highlight=False)
            return await client.wait_for_result(tid, timeout_s) if wait else None

    result = run(go())
    if result is not None:
        console.print_json(result.model_dump_json())
        if result.status != "completed":
            raise typer.Exit(ExitCode.NOT_COMPLETED)


def watch(
    task_id: str = typer.Argument(..., help="The task to follow."),
    since_s: float = typer.Option(3600.0, "--since-s", min=0, help="Look this far back for the task's messages."),
    idle_timeout_s: float = typer.Option(
        30.0, "--idle-timeout-s", min=0.1, help="Give up after this long without news (not while a person decides)."
    ),
    as_json: bool = JsonOption,
    bootstrap: str = typer.Option(None, help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."),
) -> None:
    """Follow a task live, hop by hop, until its result (or a dead letter) arrives.

    While the task waits for a person it says so (rule, role, approvals so far) and keeps
    following, however long the review takes. With --json, each message as it arrives:
    its kind (submitted, handoff, step, review_requested, review_decided, result, dead_letter),
    topic, offset and body.
    """
    settings = CliSettings()
    from handrail.contracts import load_contracts
    from handrail.tools import default_registry
    from handrail.topics import Topics

    topics = Topics(settings.topic_prefix)
    agents = load_contracts(settings.config_dir, default_registry().names()).agents
    names = [topics.tasks, topics.steps, topics.results, topics.dlq, topics.reviews_requested, topics.reviews_decided]
    names += [topics.agent(a) for a in agents]

    async def go() -> str | None:
        reader = await open_reader(
            bootstrap or settings.kafka_bootstrap,
            names,
            int((time.time() - since_s) * 1000),
            settings.kafka_credentials(),
        )
        in_review: str | None = None  # the review the task waits on, if any
        required = 0  # and how many approvals it needs
        try:
            while True:
                async for record in follow(reader, idle_timeout_s):
                    if record.key != task_id.encode():
                        continue
                    body: dict[str, Any] = json.loads(record.value or b"{}")
                    if record.topic == topics.reviews_requested:
                        in_review, required = str(body.get("review_id")), int(body.get("approvals_required") or 1)
                    if as_json:
                        kind = _kind(record.topic, topics)
                        print_json_lines([{"kind": kind, "topic": record.topic, "offset": record.offset, "body": body}])
                    else:
                        console.print(_describe(record.topic, body, topics, required), highlight=False)
                    if record.topic == topics.results:
                        return str(body.get("status"))
                    if record.topic == topics.reviews_decided and body.get("decision"):
                        in_review = None
                if in_review is None:
                    return None
                (err_console if as_json else console).print(f"still waiting for review {in_review}", highlight=False)
        finally:
            await reader.stop()

    status = run(go())
    if status is None:
        (err_console if as_json else console).print(f"no result for {task_id} yet (no news for {idle_timeout_s:g}s)")
        raise typer.Exit(ExitCode.NOT_FOUND)
    if status != "completed":
        raise typer.Exit(ExitCode.NOT_COMPLETED)


def _kind(topic: str, topics: Any) -> str:
    kinds = {
        topics.tasks: "submitted",
        topics.steps: "step",
        topics.results: "result",
        topics.dlq: "dead_letter",
        topics.reviews_requested: "review_requested",
        topics.reviews_decided: "review_decided",
    }
    return str(kinds.get(topic, "handoff"))


def _describe(topic: str, body: dict[str, Any], topics: Any, required: int = 0) -> str:
    if topic == topics.tasks:
        return f"submitted    workflow={body.get('workflow')}"
    if topic == topics.steps:
        usage = body.get("usage", {})
        return (
            f"step done    {body.get('step')}{_run(body)} by {body.get('agent')}  "
            f"calls={usage.get('model_calls', 0)}m/{usage.get('tool_calls', 0)}t  "
            f"context={str(body.get('context_hash'))[:12]}"
        )
    if topic == topics.results:
        extra = body.get("reason") or json.dumps(body.get("output"))
        return f"result       {body.get('status')}  {extra}"
    if topic == topics.dlq:
        return f"dead letter  {body.get('error_type')}: {body.get('reason')}"
    if topic == topics.reviews_requested:
        return (
            f"waiting for review: rule {body.get('rule') or body.get('trigger')}, role {body.get('role')}, "
            f"0 of {body.get('approvals_required')} approvals  (review {body.get('review_id')}: {body.get('reason')})"
        )
    if topic == topics.reviews_decided:
        approvals = body.get("approvals") or []
        if body.get("action") == "comment":
            return f"review note  {body.get('by')}: {body.get('reason')}"
        if body.get("decision"):
            return f"reviewed     {body.get('decision')} by {', '.join(approvals) or body.get('by')}"
        review = body.get("review_id")
        return f"approval     by {body.get('by')}: {len(approvals)} of {required} approvals  (review {review})"
    evaluation = _evaluation(body)
    told = f"  told: {'; '.join(evaluation.get('critique') or [])}" if evaluation.get("critique") else ""
    return (
        f"handoff      {body.get('step')}{_run(body)} -> {body.get('receiver')}  "
        f"context={str(body.get('context_hash'))[:12]}{told}"
    )


def _evaluation(body: dict[str, Any]) -> dict[str, Any]:
    """The evaluation a step's evaluator sent it back with (``evaluations.<step>`` of the context), if any."""
    found = (body.get("context") or {}).get("evaluations") or {}
    entry = found.get(body.get("step")) if isinstance(found, dict) else None
    return entry if isinstance(entry, dict) else {}


def _run(body: dict[str, Any]) -> str:
    """`` (run N)`` for a step an evaluator sent back; nothing for a first run."""
    iteration = _evaluation(body).get("iteration")
    return f" (run {iteration})" if isinstance(iteration, int) and iteration > 1 else ""
