"""``handrail replay`` on the real bus: a finished task's steps re-run from their recordings alone.

The demo's stack runs the task; the CLI, as its own process, reads the trail, the step reports and
the handoffs back from Kafka and re-runs each step with nothing but the recorded answers.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
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


# -- golden suites --------------------------------------------------------------------------------------------


def golden(stack: Stack, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[Any], str]:
    done = run_handrail("golden", *args, env={**cli_env(stack), **(env or {})})
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, rows, done.stdout + done.stderr


async def test_a_suite_exported_from_production_passes_and_shows_what_a_change_does(
    stack: Stack, tmp_path: Path
) -> None:
    since = datetime.now(UTC).isoformat()
    tasks = [await submit(stack, "expense-approval", f"golden{i}") for i in range(2)]
    for task_id in tasks:
        [result] = await results(stack, task_id, 1)
        assert result.status == TaskStatus.COMPLETED, result
    suite = tmp_path / "suite.json"
    code, _, said = golden(stack, "export", "-w", "expense-approval", "--since", since, "--out", str(suite))
    assert code == 0, said
    cases = json.loads(suite.read_text())["cases"]
    assert sorted(c["task_id"] for c in cases) == sorted(tasks)
    assert all(c["input"]["employee_id"] == "E100" and len(c["steps"]) == 2 for c in cases)

    code, rows, said = golden(stack, "run", str(suite), "--json")
    assert code == 0, said
    assert [r["verdict"] for r in rows] == ["pass", "pass"], rows

    # The approver's model now gives other reasons: from the recordings nothing shows (it is not asked);
    # run for real, the cases change, and the diff says how.
    config = tmp_path / "config"
    shutil.copytree(Path(stack.env["HANDRAIL_CONFIG_DIR"]), config)
    agents = yaml.safe_load((config / "agents.yaml").read_text())
    agents["agents"]["expense-approver"]["plan"][-1]["answer"]["reasons"] = ["a new prompt says so"]
    (config / "agents.yaml").write_text(yaml.safe_dump(agents))
    changed_env = {"HANDRAIL_CONFIG_DIR": str(config)}
    code, rows, said = golden(stack, "run", str(suite), "--json", env=changed_env)
    assert code == 0, said
    code, rows, said = golden(stack, "run", str(suite), "--json", "--live", env=changed_env)
    assert code == 1, said
    assert [r["verdict"] for r in rows] == ["changed", "changed"], rows
    decide = next(s for s in rows[0]["steps"] if s["step"] == "decide")
    assert decide["mode"] == "live" and decide["outcome"] == "changed"
    assert {"op": "replace", "path": "/reasons/0", "value": "a new prompt says so"} in decide["patch"], decide
    code, _, said = golden(stack, "run", str(suite), "--live", env=changed_env)
    assert code == 1 and "case " in said and "changed" in said and "/reasons/0" in said, said

    # A recording altered in the file fails its case.
    body = json.loads(suite.read_text())
    for call in body["cases"][0]["steps"][1]["report"]["recording"]["calls"]:
        if call["kind"] == "tool":
            call["reply"] = {**call["reply"], "decision": "rejected"}
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(body))
    code, rows, said = golden(stack, "run", str(forged), "--json")
    assert code == 1 and [r["verdict"] for r in rows] == ["failed", "pass"], rows


async def test_golden_export_says_what_is_wrong_with_its_arguments(stack: Stack, tmp_path: Path) -> None:
    out = str(tmp_path / "s.json")
    code, _, said = golden(stack, "export", "-w", "expense-approval", "--only", "maybe", "--out", out)
    assert code == 2 and "expected completed or approved" in said, said
    code, _, said = golden(stack, "export", "-w", "nope", "--out", out)
    assert code == 2 and "workflow 'nope' is not in workflows.yaml" in said, said
    code, _, said = golden(stack, "export", "-w", "expense-approval", "--since", "2999-01-01T00:00:00", "--out", out)
    assert code == 4 and "no completed task" in said, said
    code, _, said = golden(stack, "export", "-w", "expense-approval", "--only", "approved", "--since",
                           datetime.now(UTC).isoformat(), "--out", out)  # fmt: skip
    assert code == 4 and "no approved task" in said, said


async def test_a_task_is_named_by_the_unique_start_of_its_id(stack: Stack) -> None:
    twins = [await submit(stack, "expense-approval", "twin") for _ in range(2)]
    for task_id in twins:
        await results(stack, task_id, 1)
    code, rows = replay(stack, twins[0][:-3])
    assert code == 0 and {r["task_id"] for r in rows} == {twins[0]}, rows
    traced = run_handrail("trace", twins[1][:-3], "--json", env=cli_env(stack))
    assert traced.returncode == 0 and twins[1] in traced.stdout, traced.stderr

    both = run_handrail("replay", "twin-", env=cli_env(stack))
    assert both.returncode == 2 and "is the start of" in both.stderr, both.stderr
    assert all(t in both.stderr.replace("\n", "").replace("│", "").replace(" ", "") for t in twins), both.stderr
