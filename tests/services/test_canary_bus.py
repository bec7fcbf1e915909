"""A canary of a prompt version on the real bus: it takes its share of the tasks, and rolls itself back.

The intake agent runs on the fake OpenAI-compatible server. Its version 1 answers well; version 2
(the candidate) carries a marker the server answers with an amount that is not a number, so the
validator rejects the step and the task fails. With a canary of version 2, the circuit-breaker
counts both versions' tasks, finds the candidate's failure rate above live's by more than the
agent's rule allows, and rolls it back: a control record, an audit record on the task that tipped
it, the canary gone, and the next tasks of its cohort run version 1 and complete.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fixtures.cli import handrail as run_handrail
from tests.fixtures.model_server import FakeModelServer, Received, Reply, answer, openai_model, serving
from tests.fixtures.stack import PROJECT_ROOT, Stack
from tests.libs.cli.test_task_ops_bus import CLAIM, audit, cli_env, results

from handrail.messages import ControlRecord, TaskResult, TaskStatus
from handrail.prompts.canary import Canary
from handrail_dev.expenses import EMPLOYEES

pytestmark = [pytest.mark.bus, pytest.mark.timeout(300)]

MODEL = "canary-gpt"
KEY_ENV = "HANDRAIL_CANARY_MODEL_KEY"
KEY = f"sk-canary-{uuid.uuid4().hex}"
AGENT = "expense-intake"
MARKER = "Round every amount to a word."
MIN_TASKS = 3


def intake(received: Received) -> Reply:
    """Version 1's answer is right; the candidate's (its prompt has the marker) breaks the schema."""
    task = json.loads(next(m["content"] for m in received.body["messages"] if m["role"] == "user"))
    claim = task["context"]["input"]
    employee = {"employee_id": claim["employee_id"], **EMPLOYEES[claim["employee_id"]]}
    amount_usd: Any = "forty-two" if MARKER in received.system_text() else float(claim["amount"])
    return answer({"employee": employee, "amount": claim["amount"], "currency": claim["currency"],
                   "amount_usd": amount_usd, "description": claim["description"]})  # fmt: skip


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeModelServer]:
    with serving(intake) as server:
        yield server


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory, model_server: FakeModelServer) -> Path:
    config = tmp_path_factory.mktemp("canary") / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    first = (config / "prompts" / AGENT / "1.md").read_text()
    (config / "prompts" / AGENT / "2.md").write_text(first + f"\n{MARKER}\n")
    agents = yaml.safe_load((config / "agents.yaml").read_text())
    agents["agents"][AGENT]["model_chain"] = [MODEL]
    agents["agents"][AGENT]["canary"] = {"window_s": 120, "min_tasks": MIN_TASKS, "max_failure_rate_increase": 0.2}
    (config / "agents.yaml").write_text(yaml.safe_dump(agents))
    catalogue = yaml.safe_load((config / "models.yaml").read_text())
    catalogue["models"][MODEL] = openai_model(model_server, KEY_ENV)
    (config / "models.yaml").write_text(yaml.safe_dump(catalogue))
    return config


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {KEY_ENV: KEY}


def canary_cli(stack: Stack, *args: str) -> tuple[int, str]:
    done = run_handrail("prompts", "canary", *args, env=cli_env(stack))
    return done.returncode, done.stdout + done.stderr


def shown(stack: Stack) -> dict[str, Any]:
    code, out = canary_cli(stack, AGENT, "--json")
    assert code == 0, out
    return dict(json.loads(out.strip().splitlines()[-1]))


def ids_of(canary: Canary, candidate: bool, count: int) -> list[str]:
    """Task ids the canary sends to the candidate (or not): the cohort is a hash, so it can be chosen."""
    ids: list[str] = []
    while len(ids) < count:
        task_id = f"canary-{uuid.uuid4().hex[:12]}"
        if canary.in_cohort(task_id) == candidate:
            ids.append(task_id)
    return ids


async def run_tasks(stack: Stack, task_ids: list[str]) -> list[TaskResult]:
    for task_id in task_ids:
        body = {"task_id": task_id, "workflow": "expense-approval", "input": CLAIM, "submitted_by": "tests"}
        await stack.produce(stack.topics.tasks, json.dumps(body).encode(), task_id)
    return [(await results(stack, task_id, 1))[0] for task_id in task_ids]


async def test_a_worse_candidate_is_rolled_back_by_itself_and_its_cohort_runs_live_again(
    stack: Stack, model_server: FakeModelServer
) -> None:
    refused = canary_cli(stack, f"{AGENT}@1", "--percent", "50")
    assert refused[0] == 2 and "live version already" in refused[1], refused
    code, out = canary_cli(stack, f"{AGENT}@2", "--percent", "50")
    assert code == 0 and "50% of expense-intake's tasks run 2, the rest 1" in out, out
    running = shown(stack)["canary"]
    canary = Canary(running["id"], AGENT, AGENT, "2", "1", 50.0, running["by"], running["at"])

    # Live's share first: all complete, and the canary is not judged on one version's figures.
    live = await run_tasks(stack, ids_of(canary, candidate=False, count=MIN_TASKS))
    assert all(r.status == TaskStatus.COMPLETED for r in live), live
    figures = shown(stack)
    assert figures["live"]["tasks"] == MIN_TASKS and figures["verdict"] == "too few tasks", figures

    # The candidate's share: each step renders version 2, and the validator rejects it.
    cohort = ids_of(canary, candidate=True, count=MIN_TASKS)
    failed = await run_tasks(stack, cohort)
    assert all(r.status == TaskStatus.FAILED and r.error_type == "output_schema_violation" for r in failed), failed
    assert sum(MARKER in r.system_text() for r in model_server.requests(MODEL)) == MIN_TASKS

    # The third failure tipped it: the canary is gone, announced on the control topic and audited.
    for _ in range(40):
        after = shown(stack)
        if after["canary"] is None:
            break
        await asyncio.sleep(0.5)
    assert after["canary"] is None, after
    assert any(c["action"] == "canary.rolled_back" for c in after["changes"]), after["changes"]
    records = [
        ControlRecord.model_validate_json(v) for v in await stack.read(stack.topics.control, f"canary:agent:{AGENT}")
    ]
    assert [(r.kind, r.name, r.state) for r in records] == [("canary", AGENT, "rolled_back")], records
    assert "failure rate 100.0% against live's 0.0%" in (records[0].reason or ""), records[0]
    trail = [a for t in cohort for a in await audit(stack, t) if a.action == "canary.rolled_back"]
    assert len(trail) == 1 and trail[0].details["candidate"] == f"{AGENT}@2", trail
    judged = trail[0].details["figures"]
    assert judged["candidate"]["tasks"] == judged["live"]["tasks"] == MIN_TASKS, judged
    assert (judged["candidate"]["failure_rate"], judged["live"]["failure_rate"]) == (1, 0), judged

    # Tasks the canary would have sent to version 2 now run version 1, and complete.
    before = len(model_server.requests(MODEL))
    again = await run_tasks(stack, ids_of(canary, candidate=True, count=2))
    assert all(r.status == TaskStatus.COMPLETED for r in again), again
    assert not any(MARKER in r.system_text() for r in model_server.requests(MODEL)[before:])
    stopped = canary_cli(stack, AGENT, "--stop")
    assert stopped[0] == 2 and "has no canary running" in stopped[1], stopped
