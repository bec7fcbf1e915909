"""The ``handrail`` CLI as a user runs it: a separate process, real Kafka for the bus commands."""

from __future__ import annotations

import json
import uuid

import pytest
from tests.fixtures.cli import handrail
from tests.fixtures.stack import Stack

from handrail.audit import AuditRecord
from handrail.signing import OPERATOR
from handrail.topics import TopicSpec, ensure_topics
from handrail_dev import signing_keys


def stack_env(stack: Stack) -> dict[str, str]:
    return {
        "HANDRAIL_KAFKA_BOOTSTRAP": stack.bootstrap,
        "HANDRAIL_TOPIC_PREFIX": stack.topics.prefix,
        # The stack's keys: the CLI signs as its operator and checks audit signatures with them.
        "HANDRAIL_SIGNING_KEY_FILE": str(stack.run_dir / signing_keys.FOLDER / f"{OPERATOR}.pem"),
        "HANDRAIL_TRUSTED_KEYS_FILE": str(stack.run_dir / signing_keys.FOLDER),
    }


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


def test_version_prints_the_installed_version() -> None:
    from importlib import metadata

    shown = handrail("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"handrail {metadata.version('handrail')}"


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
    claim = json.dumps({"employee_id": "E102", "amount": 250, "currency": "EUR", "description": "course"})
    submitted = handrail("submit", "-w", "expense-approval", "-i", claim, "--task-id", task_id, "--wait", env=env)
    assert submitted.returncode == 0, submitted.stderr
    lines = submitted.stdout.splitlines()
    assert lines[0] == task_id
    result = json.loads("\n".join(lines[1:]))
    assert result["status"] == "completed" and result["output"]["decision"] == "approved"

    watched = handrail("watch", task_id, "--idle-timeout-s", "5", env=env)
    assert watched.returncode == 0, watched.stderr
    kinds = [line.split()[0] for line in watched.stdout.splitlines()]
    assert kinds == ["submitted", "handoff", "step", "handoff", "step", "result"], watched.stdout
    as_json = handrail("watch", task_id, "--idle-timeout-s", "5", "--json", env=env)
    messages = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [m["kind"] for m in messages] == ["submitted", "handoff", "step", "handoff", "step", "result"]
    assert messages[-1]["body"]["status"] == "completed" and as_json.returncode == 0

    bad_id = f"cli-bad-{uuid.uuid4().hex[:10]}"
    rejected = handrail("submit", "-w", "payroll", "-i", "{}", "--task-id", bad_id, "--wait", env=env)
    assert rejected.returncode == 3 and '"status": "rejected"' in rejected.stdout
    listed = handrail("dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert any(x["task_id"] == bad_id and x["error_type"] == "unknown_workflow" for x in letters)
    table = handrail("dlq", "list", env=env)
    assert bad_id in table.stdout and "unknown_workflow" in table.stdout
    [mine] = [x for x in letters if x["task_id"] == bad_id]
    assert mine["reason"] in table.stdout, "written to a pipe, nothing is cut to fit 80 columns"
    again = f"cli-bad-{uuid.uuid4().hex[:10]}"
    assert handrail("submit", "-w", "payroll", "-i", "{}", "--task-id", again, "--wait", env=env).returncode == 3
    newest = handrail("dlq", "list", "--limit", "1", env=env)
    assert again in newest.stdout and bad_id not in newest.stdout
    assert f"showing the newest 1 of {len(letters) + 1} in the last" in newest.stdout, newest.stdout


@pytest.mark.bus
def test_topics_ensure_is_idempotent(stack: Stack) -> None:
    env = {**stack_env(stack), "HANDRAIL_TOPIC_PREFIX": f"cli{uuid.uuid4().hex[:8]}."}
    first = handrail("topics", "ensure", env=env)
    assert first.returncode == 0, first.stderr
    # The nine shared topics and one per agent of config/agents.yaml (five).
    assert first.stdout.count("created") == 14
    second = handrail("topics", "ensure", env=env)
    assert second.returncode == 0 and "created" not in second.stdout and second.stdout.count("exists") == 14


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


def _submit(env: dict[str, str], workflow: str, task_input: dict[str, object], task_id: str) -> dict[str, object]:
    done = handrail("submit", "-w", workflow, "-i", json.dumps(task_input), "--task-id", task_id, "--wait", env=env)
    return dict(json.loads("\n".join(done.stdout.splitlines()[1:])))


@pytest.mark.bus
def test_trace_rebuilds_a_completed_a_dead_lettered_and_a_halted_task(stack: Stack) -> None:
    env = {
        **stack_env(stack),
        "HANDRAIL_REDIS_URL": stack.redis_url,
        "HANDRAIL_REDIS_PREFIX": stack.env["HANDRAIL_REDIS_PREFIX"],
    }
    done_id = f"trace-ok-{uuid.uuid4().hex[:8]}"
    _submit(
        env, "expense-approval", {"employee_id": "E100", "amount": 30, "currency": "USD", "description": "ink"}, done_id
    )
    traced = handrail("trace", done_id, "--json", env=env)
    assert traced.returncode == 0, traced.stderr
    body = json.loads(traced.stdout)
    actions = [r["action"] for r in body["records"]]
    # each step's record stands for the handoff it ran on too: agents write no audit records
    assert actions == ["task.opened", "step.completed", "step.completed", "task.completed"]
    handoffs = [r["details"]["handoff"] for r in body["records"] if r["action"] == "step.completed"]
    assert [h["sender"] for h in handoffs] == ["router", "validator"]
    assert body["chain"].startswith("intact")
    assert [c["name"] for c in body["calls"] if c["kind"] == "tool_call"] == [
        "lookup_employee",
        "convert_currency",
        "check_policy",
        "record_decision",
    ]
    tree = handrail("trace", done_id, env=env).stdout
    for expected in (
        "task.opened",
        "step.completed",
        "diff add /steps/intake",
        "tool_call check_policy ok",
        "budget steps",
        "intact",
    ):
        assert expected in tree, tree

    dead_id = f"trace-dlq-{uuid.uuid4().hex[:8]}"
    _submit(env, "payroll", {}, dead_id)
    actions = [r["action"] for r in json.loads(handrail("trace", dead_id, "--json", env=env).stdout)["records"]]
    assert actions == ["message.dead_lettered", "task.rejected"]

    halted_id = f"trace-halt-{uuid.uuid4().hex[:8]}"
    assert handrail("halt", halted_id, "--reason", "hold on", env=env).returncode == 0
    _submit(
        env,
        "expense-approval",
        {"employee_id": "E100", "amount": 30, "currency": "USD", "description": "ink"},
        halted_id,
    )
    actions = [r["action"] for r in json.loads(handrail("trace", halted_id, "--json", env=env).stdout)["records"]]
    assert actions[0] == "halt.halted" and actions[-1] == "task.halted"
    assert "hold on" in handrail("trace", halted_id, env=env).stdout


@pytest.mark.bus
async def test_audit_verify_finds_the_one_altered_byte(stack: Stack) -> None:
    env = stack_env(stack)
    task_id = f"verify-{uuid.uuid4().hex[:8]}"
    _submit(
        env,
        "expense-approval",
        {"employee_id": "E101", "amount": 90, "currency": "USD", "description": "desk"},
        task_id,
    )
    intact = handrail("audit", "verify", task_id, env=env)
    assert intact.returncode == 0 and "intact (4 records) and signed" in intact.stdout, intact.stdout + intact.stderr
    verified = handrail("audit", "verify", task_id, "--json", env=env)
    [verdict] = [json.loads(line) for line in verified.stdout.splitlines()]
    assert verdict["intact"] and verdict["records"] == 4 and verdict["signatures_checked"]
    strangers = handrail("audit", "verify", task_id, env={**env, "HANDRAIL_TRUSTED_KEYS_FILE": str(stack.run_dir)})
    assert (
        strangers.returncode == 1
        and "record seq 1 at offset" in strangers.stdout
        and ": unknown_signer:" in strangers.stdout
    )  # none trusted

    records = await stack.read(stack.topics.audit, task_id)
    scratch = f"{stack.topics.prefix}scratch-audit-{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.bootstrap, [TopicSpec(scratch, partitions=1)])
    victim = records[2]
    at = victim.index(b'"step.completed"') + 1  # one byte of the third record
    altered = victim[:at] + b"H" + victim[at + 1 :]
    for value in [*records[:2], altered, *records[3:]]:
        await stack.produce(scratch, value, key=task_id)
    broken = handrail("audit", "verify", task_id, "--topic", scratch, env=env)
    assert broken.returncode == 1
    assert "broken at record seq 3" in broken.stdout and "does not match its record_hash" in broken.stdout

    dropped = f"{scratch}-dropped"
    await ensure_topics(stack.bootstrap, [TopicSpec(dropped, partitions=1)])
    for value in [*records[:2], *records[3:]]:
        await stack.produce(dropped, value, key=task_id)
    missing = handrail("audit", "verify", task_id, "--topic", dropped, env=env)
    assert missing.returncode == 1 and "broken at record seq 4" in missing.stdout

    # An agent rewrites the validator's last record: a new reason, a correct hash, its own signature.
    last = AuditRecord.model_validate_json(records[-1])
    assert last.actor == "service:validator"
    rewritten = last.model_copy(update={"reason": "nothing to see", "signature": None})
    rewritten = stack.signer("expense-intake").sign(
        rewritten.model_copy(update={"record_hash": rewritten.computed_hash()})
    )
    forged_topic = f"{scratch}-forged"
    await ensure_topics(stack.bootstrap, [TopicSpec(forged_topic, partitions=1)])
    for value in [*records[:-1], rewritten.to_bytes()]:
        await stack.produce(forged_topic, value, key=task_id)
    forged = handrail("audit", "verify", task_id, "--topic", forged_topic, env=env)
    assert forged.returncode == 1 and "broken at record seq 4 at offset 3: wrong_signer:" in forged.stdout, (
        forged.stdout
    )
