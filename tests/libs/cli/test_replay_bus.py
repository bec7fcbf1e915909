"""``handrail replay`` on the real bus: a finished task's steps re-run from their recordings alone.

The demo's stack runs the task; the CLI, as its own process, reads the trail, the step reports and
the handoffs back from Kafka and re-runs each step with nothing but the recorded answers.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from tests.fixtures.cli import handrail as run_handrail
from tests.fixtures.stack import Stack
from tests.libs.cli.test_task_ops_bus import cli_env, results, submit
from tests.services.test_limits_bus import ledger_entries

from handrail.audit.reader import read_key
from handrail.bus.broker import make_admin
from handrail.messages import StepCompleted, TaskStatus
from handrail.topics import TopicSpec, ensure_topics

pytestmark = [pytest.mark.bus, pytest.mark.timeout(300)]


def replay(stack: Stack, task_id: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, list[Any]]:
    done = run_handrail("replay", task_id, "--json", *extra, env={**cli_env(stack), **(env or {})})
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, rows


async def test_a_finished_task_replays_step_by_step_to_the_same_hashes_and_runs_no_tool_again(stack: Stack) -> None:
    task_id = await submit(stack, "expense-approval", "replayed")
    [result] = await results(stack, task_id, 1)
    assert result.status == TaskStatus.COMPLETED, result
    ledger = ledger_entries(stack, task_id)
    assert len(ledger) == 1

    code, rows = replay(stack, task_id)
    assert code == 0, rows
    assert [(r["step"], r["outcome"]) for r in rows] == [("intake", "same"), ("decide", "same")], rows
    assert all(r["chain"].startswith("intact") and r["played"] == r["recorded"] > 0 for r in rows), rows
    assert rows[-1]["context_hash"] == result.context_hash, "the last hop's hash is the result's"
    assert ledger_entries(stack, task_id) == ledger, "the side effect did not happen again"


async def test_a_tampered_recording_is_named_and_fails_the_replay(stack: Stack) -> None:
    task_id = await submit(stack, "expense-approval", "tampered")
    [result] = await results(stack, task_id, 1)
    assert result.status == TaskStatus.COMPLETED, result

    # A copy of the task's step reports, the approver's with a tool answer altered after the fact.
    copy = f"{stack.topics.prefix}steps-copy-{task_id}"
    await ensure_topics(stack.bootstrap, [TopicSpec(copy)])
    for _, _, value in await read_key(stack.bootstrap, stack.topics.steps, task_id):
        report = StepCompleted.model_validate_json(value)
        if report.step == "decide" and report.recording is not None:
            calls = [
                c.model_copy(update={"reply": {**(c.reply or {}), "decision": "approved", "reasons": ["forged"]}})
                if c.kind == "tool"
                else c
                for c in report.recording.calls
            ]
            report = report.model_copy(update={"recording": report.recording.model_copy(update={"calls": calls})})
        await stack.produce(copy, report.to_bytes(), task_id)

    code, rows = replay(stack, task_id, "--steps-topic", copy)
    assert code == 1, rows
    outcomes = {r["step"]: r for r in rows}
    assert outcomes["intake"]["outcome"] == "same", rows
    assert outcomes["decide"]["outcome"] == "tampered" and "altered after the step ran" in outcomes["decide"]["detail"]


async def test_a_changed_prompt_file_shows_as_a_divergence_at_the_first_model_call(
    stack: Stack, tmp_path: Path
) -> None:
    task_id = await submit(stack, "expense-approval", "reprompted")
    [result] = await results(stack, task_id, 1)
    assert result.status == TaskStatus.COMPLETED, result

    config = tmp_path / "config"
    shutil.copytree(Path(stack.env["HANDRAIL_CONFIG_DIR"]), config)
    prompt = config / "prompts" / "expense-intake" / "1.md"
    prompt.write_text(prompt.read_text() + "\nBe brief.\n")

    code, rows = replay(stack, task_id, env={"HANDRAIL_CONFIG_DIR": str(config)})
    assert code == 1, rows
    intake = next(r for r in rows if r["step"] == "intake")
    assert intake["outcome"] == "diverged" and intake["played"] == 0, intake
    assert intake["detail"].startswith("call 1: the re-run was asked something else"), intake


async def test_how_long_recordings_are_kept_is_the_steps_topic_s_retention_set_at_creation(
    kafka_bootstrap: str,
) -> None:
    prefix = f"retention{uuid.uuid4().hex[:8]}."
    done = run_handrail(
        "topics", "ensure", "--prefix", prefix, "--steps-retention-days", "2.5",
        env={"HANDRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    admin = make_admin(kafka_bootstrap, "retention-check")
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}{name}") for name in ("steps", "tasks")]
        )
    finally:
        await admin.close()
    retention = {
        topic: {key: value for key, value, *_ in entries}["retention.ms"]
        for _, _, _, topic, entries in response.resources
    }
    assert retention == {f"{prefix}steps": str(int(2.5 * 86_400_000)), f"{prefix}tasks": str(7 * 86_400_000)}


async def test_a_live_rerun_calls_the_models_again_runs_no_side_effect_and_compares_outputs(stack: Stack) -> None:
    task_id = await submit(stack, "expense-approval", "live")
    [result] = await results(stack, task_id, 1)
    assert result.status == TaskStatus.COMPLETED, result
    ledger = ledger_entries(stack, task_id)

    code, rows = replay(stack, task_id, "--live", "--prompt", "expense-intake@2")
    assert code == 0, rows
    by_step = {r["step"]: r for r in rows}
    assert {r["mode"] for r in rows} == {"live"} and all(r["outcome"] == "same" for r in rows), rows
    assert by_step["intake"]["prompt"] == "expense-intake@2" and by_step["decide"]["prompt"] is None
    assert "tool record_decision" in by_step["decide"]["calls"], "the side effect was asked for, and answered dry"
    assert ledger_entries(stack, task_id) == ledger, "and did not happen again"

    wrong = run_handrail("replay", task_id, "--prompt", "expense-approver@7", env=cli_env(stack))
    assert wrong.returncode == 2 and "expense-approver" in wrong.stderr, wrong.stderr
