"""The ``handrail`` CLI as a user runs it: a separate process, real Kafka for the bus commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from tests.fixtures.stack import PROJECT_ROOT, Stack


def handrail(*args: str, env: dict[str, str] | None = None, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "handrail.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=PROJECT_ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


def stack_env(stack: Stack) -> dict[str, str]:
    return {"HANDRAIL_KAFKA_BOOTSTRAP": stack.bootstrap, "HANDRAIL_TOPIC_PREFIX": stack.topics.prefix}


def test_bad_arguments_are_usage_errors_that_say_what_is_wrong() -> None:
    bad_json = handrail("submit", "-w", "expense-approval", "-i", "{not json")
    assert bad_json.returncode == 2
    assert "--input" in bad_json.stderr and "not valid JSON" in bad_json.stderr
    not_object = handrail("submit", "-w", "expense-approval", "-i", "[1, 2]")
    assert not_object.returncode == 2 and "must be a JSON object" in not_object.stderr
    missing = handrail("submit", "-i", "{}")
    assert missing.returncode == 2 and "--workflow" in missing.stderr
    no_file = handrail("submit", "-w", "x", "-i", "@/nonexistent/claim.json")
    assert no_file.returncode == 2 and "cannot read /nonexistent/claim.json" in no_file.stderr


def test_an_unreachable_broker_is_one_clear_line() -> None:
    # Port 9 (discard) is not a Kafka broker on any test machine.
    result = handrail("submit", "-w", "expense-approval", "-i", "{}", "--bootstrap", "127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.bus
def test_submit_wait_watch_and_dlq_list(stack: Stack) -> None:
    env = stack_env(stack)
    task_id = f"cli-{uuid.uuid4().hex[:10]}"
    claim = json.dumps({"employee_id": "E102", "amount": 2500, "currency": "EUR", "description": "course"})
    submitted = handrail("submit", "-w", "expense-approval", "-i", claim, "--task-id", task_id, "--wait", env=env)
    assert submitted.returncode == 0, submitted.stderr
    lines = submitted.stdout.splitlines()
    assert lines[0] == task_id
    result = json.loads("\n".join(lines[1:]))
    assert result["status"] == "completed" and result["output"]["escalation"]["role"] == "manager"

    watched = handrail("watch", task_id, "--idle-timeout-s", "5", env=env)
    assert watched.returncode == 0, watched.stderr
    kinds = [line.split()[0] for line in watched.stdout.splitlines()]
    assert kinds == ["submitted", "handoff", "step", "handoff", "step", "result"], watched.stdout

    bad_id = f"cli-bad-{uuid.uuid4().hex[:10]}"
    rejected = handrail("submit", "-w", "payroll", "-i", "{}", "--task-id", bad_id, "--wait", env=env)
    assert rejected.returncode == 3 and '"status": "rejected"' in rejected.stdout
    listed = handrail("dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert any(x["task_id"] == bad_id and x["error_type"] == "unknown_workflow" for x in letters)
    table = handrail("dlq", "list", env=env)
    assert bad_id in table.stdout and "unknown_workflow" in table.stdout


@pytest.mark.bus
def test_topics_ensure_is_idempotent(stack: Stack) -> None:
    env = {**stack_env(stack), "HANDRAIL_TOPIC_PREFIX": f"cli{uuid.uuid4().hex[:8]}."}
    first = handrail("topics", "ensure", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 11
    second = handrail("topics", "ensure", env=env)
    assert second.returncode == 0 and "created" not in second.stdout and second.stdout.count("exists") == 11


@pytest.mark.bus
def test_halt_and_resume_a_task(stack: Stack) -> None:
    env = {
        **stack_env(stack),
        "HANDRAIL_REDIS_URL": stack.redis_url,
        "HANDRAIL_REDIS_PREFIX": stack.env["HANDRAIL_REDIS_PREFIX"],
    }
    claim = json.dumps({"employee_id": "E100", "amount": 12, "currency": "USD", "description": "tape"})
    task_id = f"cli-halt-{uuid.uuid4().hex[:10]}"
    halted = handrail("halt", task_id, "--reason", "fraud check", env=env)
    assert halted.returncode == 0 and f"halted task {task_id}" in halted.stdout, halted.stderr
    submitted = handrail("submit", "-w", "expense-approval", "-i", claim, "--task-id", task_id, "--wait", env=env)
    result = json.loads("\n".join(submitted.stdout.splitlines()[1:]))
    assert result["status"] == "halted" and result["error_type"] == "halted_by_operator"
    assert "fraud check" in result["reason"]
    assert handrail("resume", task_id, env=env).returncode == 0
    neither = handrail("halt", env=env)
    assert neither.returncode == 2 and "exactly one of TASK or --agent" in neither.stderr
