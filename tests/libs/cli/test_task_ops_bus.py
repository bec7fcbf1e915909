"""``handrail task resume`` and ``handrail task fork`` as an operator runs them, on the real bus.

The services run as processes on real Kafka and Redis (``tests.fixtures.stack``); the CLI runs as its
own process, signing as the stack's operator. The stack's contracts are the demo's plus a workflow
that allows top-ups, and two more versions of the approver's prompt: 2 names a value no claim has
(every step on it fails), 3 is a working alternative.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest
import yaml
from tests.fixtures.cli import PROJECT_ROOT as CLI_ROOT
from tests.fixtures.cli import handrail as run_handrail
from tests.fixtures.stack import PROJECT_ROOT, Stack

from handrail.audit import AuditRecord
from handrail.audit.reader import read_key
from handrail.messages import TaskResult, TaskStatus
from handrail.signing import OPERATOR
from handrail.state import TaskStore, connect_redis, generation
from handrail_dev import signing_keys

pytestmark = [pytest.mark.bus, pytest.mark.timeout(300)]

CLAIM = {"employee_id": "E100", "amount": 42, "currency": "USD", "description": "pens"}
#: A value no claim carries: a step rendered with this prompt fails.
BROKEN_PROMPT = "You are ${agent}. Charge it to cost centre ${context.input.cost_center}.\nTools: ${tools}.\n"
OTHER_PROMPT = (
    "You are ${agent} (prompt 3). ${purpose}\nApply the policy with check_policy, record it with record_decision, "
    "then answer with one JSON object. Tools: ${tools}.\n"
)


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's contracts, a workflow that grants top-ups, and approver prompts 2 (broken) and 3."""
    config = tmp_path_factory.mktemp("resume-config")
    shutil.copytree(PROJECT_ROOT / "config", config, dirs_exist_ok=True)
    workflows = yaml.safe_load((config / "workflows.yaml").read_text())
    resumable = dict(workflows["workflows"]["expense-approval"])
    resumable.pop("escalations", None)
    resumable["max_top_up"] = {"steps": 2, "tokens": 5000, "cost_usd": 0.1, "wall_clock_s": 120}
    workflows["workflows"]["resumable-expense"] = resumable
    (config / "workflows.yaml").write_text(yaml.safe_dump(workflows))
    (config / "prompts" / "expense-approver" / "2.md").write_text(BROKEN_PROMPT)
    (config / "prompts" / "expense-approver" / "3.md").write_text(OTHER_PROMPT)
    return config


def cli_env(stack: Stack) -> dict[str, str]:
    keys = stack.run_dir / signing_keys.FOLDER
    return {
        "HANDRAIL_KAFKA_BOOTSTRAP": stack.bootstrap,
        "HANDRAIL_TOPIC_PREFIX": stack.topics.prefix,
        "HANDRAIL_REDIS_URL": stack.redis_url,
        "HANDRAIL_REDIS_PREFIX": stack.env["HANDRAIL_REDIS_PREFIX"],
        "HANDRAIL_CONFIG_DIR": stack.env["HANDRAIL_CONFIG_DIR"],
        "HANDRAIL_SIGNING_KEY_FILE": str(keys / f"{OPERATOR}.pem"),
        "HANDRAIL_TRUSTED_KEYS_FILE": str(keys),
        "COLUMNS": "200",
    }


def handrail(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_handrail(*args, env=cli_env(stack))


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


async def submit(stack: Stack, workflow: str, label: str) -> str:
    task_id = new_id(label)
    body = {"task_id": task_id, "workflow": workflow, "input": CLAIM, "submitted_by": "tests"}
    await stack.produce(stack.topics.tasks, json.dumps(body).encode(), task_id)
    return task_id


async def results(stack: Stack, task_id: str, count: int, timeout_s: float = 90) -> list[TaskResult]:
    """The task's results once there are ``count`` of them (then read a little longer: no more may come)."""
    for _ in range(int(timeout_s)):
        found = await stack.results_for(task_id)
        if len(found) >= count:
            found = await stack.results_for(task_id, settle_s=1.5)
            assert len(found) == count, f"{len(found)} results for {task_id}, expected {count}: {found}"
            return found
        await asyncio.sleep(1.0)
    raise AssertionError(f"{task_id}: {len(await stack.results_for(task_id))} results after {timeout_s}s, not {count}")


async def audit(stack: Stack, task_id: str) -> list[AuditRecord]:
    """The task's audit records, each once (a record published twice is one record)."""
    raw = await read_key(stack.bootstrap, stack.topics.audit, task_id)
    return list({r.message_id: r for r in (AuditRecord.model_validate_json(v) for _, _, v in raw)}.values())


def actions(records: list[AuditRecord], action: str, step: str | None = None) -> list[AuditRecord]:
    return [r for r in records if r.action == action and (step is None or r.step == step)]


def prompts_used(record: AuditRecord) -> set[str]:
    return {d["prompt"] for d in record.details["decisions"] if d.get("prompt")}


async def test_resuming_a_task_whose_agent_an_operator_halted_runs_it_from_its_last_checkpoint(stack: Stack) -> None:
    """Halted before its first step was accepted, the task runs again from its opening."""
    halted = handrail(stack, "halt", "--agent", "expense-intake", "--reason", "suspicious spending")
    assert halted.returncode == 0, halted.stderr
    try:
        task_id = await submit(stack, "expense-approval", "op-halted")
        [first] = await results(stack, task_id, 1)
        assert first.status == TaskStatus.HALTED and first.error_type == "halted_by_operator", first
        assert handrail(stack, "halt", task_id, "--reason", "hold this claim").returncode == 0

        refused = handrail(stack, "task", "resume", task_id, "--reason", "checked")
        assert refused.returncode == 2, refused
        assert "agent expense-intake is halted" in refused.stderr and "resume --agent" in refused.stderr
    finally:
        assert handrail(stack, "resume", "--agent", "expense-intake").returncode == 0

    resumed = handrail(stack, "task", "resume", task_id, "--reason", "spending checked with the team")
    assert resumed.returncode == 0, resumed.stderr
    said = f"resumed task {task_id} as run 2 from its opening: intake handed to expense-intake"
    assert said in resumed.stdout, resumed.stdout

    old, new = await results(stack, task_id, 2)
    assert old == first
    assert new.status == TaskStatus.COMPLETED and new.output is not None and new.output["decision"] == "approved"
    assert new.epoch == 2 and new.supersedes == first.message_id, "the new run's result says what it replaces"

    records = await audit(stack, task_id)
    [resume] = actions(records, "task.resumed")
    assert resume.actor.startswith("operator:") and resume.reason == "spending checked with the team"
    assert resume.details["epoch"] == 2 and resume.details["supersedes"] == first.message_id
    assert resume.details["checkpoint"]["kind"] == "opening"
    [opened] = actions(records, "task.opened")
    assert resume.input_hash == opened.input_hash, "the run starts from the chain's first head"
    assert len(actions(records, "step.completed", "intake")) == 1
    assert len(actions(records, "step.completed", "decide")) == 1
    # The operator's halt on the task itself was lifted with the resume, and audited.
    lifted = [r.reason for r in actions(records, "halt.resumed")]
    assert lifted == ["lifted to resume the task: spending checked with the team"]
    verified = handrail(stack, "audit", "verify", task_id)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr

    final = handrail(stack, "task", "resume", task_id, "--reason", "again")
    assert final.returncode == 2 and "ended completed (run 2, resumed by operator:" in final.stderr, final
    assert "which is final" in final.stderr


async def test_a_failed_task_resumes_with_a_top_up_once_however_many_operators_resume_it(stack: Stack) -> None:
    broke = handrail(stack, "prompts", "activate", "expense-approver", "2")
    assert broke.returncode == 0, broke.stderr
    try:
        task_id = await submit(stack, "resumable-expense", "failed")
        [first] = await results(stack, task_id, 1)
        assert first.status == TaskStatus.FAILED and "cost_center" in (first.reason or ""), first
    finally:
        assert handrail(stack, "prompts", "rollback", "expense-approver").returncode == 0

    too_much = handrail(stack, "task", "resume", task_id, "--reason", "fixed", "--top-up", "steps=3")
    assert too_much.returncode == 2 and "allows at most" in too_much.stderr and "steps 3 > 2" in too_much.stderr

    # Two operators resume the same run at once: it starts once. The one that comes second is told it was
    # done (when it looked before the first had started the run), that the task runs again, or that run 2
    # ended (when it looked later still).
    argv = ["-m", "handrail_cli", "task", "resume", task_id, "--reason", "prompt rolled back"]
    argv += ["--top-up", "steps=1,wall_clock_s=30", "--json"]
    env = {**os.environ, **cli_env(stack)}
    both = [
        await asyncio.create_subprocess_exec(sys.executable, *argv, cwd=CLI_ROOT, env=env, stdout=PIPE, stderr=PIPE)
        for _ in range(2)
    ]
    outputs = [(out.decode(), err.decode()) for out, err in [await p.communicate() for p in both]]
    codes = sorted(p.returncode or 0 for p in both)
    assert codes in ([0, 0], [0, 2]), outputs
    said = [json.loads(out) for out, _ in outputs if out]
    assert {s["epoch"] for s in said} == {2} and all(s["supersedes"] == first.message_id for s in said)
    if codes == [0, 2]:
        told = ("is running again", "ended completed (run 2, resumed by operator:")
        assert any(any(t in err for t in told) for _, err in outputs), outputs

    old, new = await results(stack, task_id, 2)
    assert old == first and new.status == TaskStatus.COMPLETED and new.epoch == 2, new
    records = await audit(stack, task_id)
    assert len(actions(records, "task.resumed")) == 1
    [grant] = actions(records, "budget.granted")
    assert grant.actor.startswith("operator:") and grant.details["top_up"]["steps"] == 1
    assert grant.details["top_up"]["wall_clock_s"] == 30 and grant.details["epoch"] == 2
    assert len(actions(records, "step.completed", "decide")) == 1, "the resumed step ran once"
    assert len(actions(records, "step.completed", "intake")) == 1, "the accepted step did not run again"

    # Redis loses this deployment's state: the services rebuild it from Kafka, run 2 and its result included.
    prefix = stack.env["HANDRAIL_REDIS_PREFIX"]
    redis = connect_redis(stack.redis_url)
    try:
        await redis.delete(*[key async for key in redis.scan_iter(match=f"{prefix}*")])
        for _ in range(60):
            if await generation.current(redis, prefix) is not None:
                break
            await asyncio.sleep(0.5)
        rebuilt = await TaskStore(redis, prefix).get(task_id)
    finally:
        await redis.aclose()
    assert rebuilt["status"] == "completed" and rebuilt["epoch"] == "2", rebuilt
    assert rebuilt["supersedes"] == first.message_id and rebuilt["result_id"] == new.message_id
    assert rebuilt["published"] == "1", "only the new run's result counts as the one published"
    after = handrail(stack, "task", "resume", task_id, "--reason", "once more")
    assert after.returncode == 2 and "ended completed (run 2, resumed by operator:" in after.stderr, after


async def test_a_fork_with_another_prompt_version_runs_on_it_and_both_trails_link_the_tasks(stack: Stack) -> None:
    source = await submit(stack, "expense-approval", "source")
    [done] = await results(stack, source, 1)
    assert done.status == TaskStatus.COMPLETED

    forked = handrail(
        stack, "task", "fork", source, "--from-step", "intake", "--prompt", "expense-approver@3",
        "--reason", "compare prompt 3", "--json",
    )  # fmt: skip
    assert forked.returncode == 0, forked.stderr
    fork = json.loads(forked.stdout)
    fork_id = fork["task_id"]
    assert fork_id != source and fork["forked_from"] == source and fork["step"] == "decide"

    [result] = await results(stack, fork_id, 1)
    assert result.status == TaskStatus.COMPLETED and result.output == done.output
    fork_records = await audit(stack, fork_id)
    [decide] = actions(fork_records, "step.completed", "decide")
    assert prompts_used(decide) == {"expense-approver@3"}, "the fork ran on the other prompt"
    assert actions(fork_records, "step.completed", "intake") == [], "the fork starts after the step it forked at"
    source_records = await audit(stack, source)
    [source_decide] = actions(source_records, "step.completed", "decide")
    assert prompts_used(source_decide) == {"expense-approver@1"}
    [source_intake] = actions(source_records, "step.completed", "intake")
    [opened] = actions(fork_records, "task.opened")
    assert opened.input_hash == source_intake.output_hash, "the fork's chain starts at the step's hash"

    traced_fork = json.loads(handrail(stack, "trace", fork_id, "--json").stdout)
    assert traced_fork["forked_from"]["task_id"] == source and traced_fork["forked_from"]["step"] == "intake"
    assert traced_fork["forked_from"]["overrides"] == {"prompts": {"expense-approver": "3"}, "models": {}}
    traced_source = json.loads(handrail(stack, "trace", source, "--json").stdout)
    assert [f["task_id"] for f in traced_source["forked_to"]] == [fork_id]
    assert (
        f"forked from task {source} at step intake (prompt expense-approver@3)"
        in handrail(stack, "trace", fork_id).stdout
    )
    assert f"forked to task {fork_id} from step intake" in handrail(stack, "trace", source).stdout
    assert handrail(stack, "audit", "verify", fork_id).returncode == 0
    assert handrail(stack, "audit", "verify", source).returncode == 0

    again = handrail(stack, "task", "fork", source, "--from-step", "intake", "--prompt", "expense-approver@3",
                     "--reason", "compare prompt 3", "--json")  # fmt: skip
    assert again.returncode == 0 and json.loads(again.stdout)["task_id"] == fork_id, "the same fork is one task"
    await results(stack, fork_id, 1)


async def test_a_step_or_task_that_cannot_be_resumed_or_forked_changes_nothing_and_says_why(stack: Stack) -> None:
    source = await submit(stack, "expense-approval", "bad-args")
    [done] = await results(stack, source, 1)
    assert done.status == TaskStatus.COMPLETED
    fork = ("task", "fork", source, "--reason", "x")
    cases: list[tuple[tuple[str, ...], int, str]] = [
        ((*fork, "--from-step", "decide"), 2, "is the last of workflow 'expense-approval'"),
        ((*fork, "--from-step", "audit"), 2, "has no step 'audit' (its steps: intake, decide)"),
        ((*fork, "--from-step", "intake", "--prompt", "expense-intake@2"), 2, "runs no step after 'intake'"),
        ((*fork, "--from-step", "intake", "--prompt", "expense-approver@99"), 2, "has no version '99'"),
        ((*fork, "--from-step", "intake", "--prompt", "expense-approver"), 2, "expected AGENT@VERSION"),
        ((*fork, "--from-step", "intake", "--model", "gpt-5-turbo"), 2, "is not a model of models.yaml"),
        (("task", "resume", source, "--reason", "x"), 2, "ended completed, which is final"),
        (("task", "resume", new_id("nobody"), "--reason", "x"), 4, "no audit records for task"),
    ]
    env = {**os.environ, **cli_env(stack)}

    async def attempt(args: tuple[str, ...]) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "handrail_cli", *args, cwd=CLI_ROOT, env=env, stdout=PIPE, stderr=PIPE
        )
        _, err = await process.communicate()
        return process.returncode or 0, err.decode()

    shown = await asyncio.gather(*(attempt(args) for args, _, _ in cases))
    for (args, code, said), (returned, err) in zip(cases, shown, strict=True):
        assert returned == code and said in err, (args, returned, err)
    records = await audit(stack, source)
    assert actions(records, "task.forked") == [] and actions(records, "task.resumed") == []
    assert len(await stack.results_for(source)) == 1
