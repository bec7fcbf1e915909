"""Shadow mode on the real bus: candidate versions run beside the live agents, and never for real.

The stack runs the demo with two shadows (``agents.yaml`` ``shadow``): the approver's is its prompt
version 2 (the scripted model answers alike: they agree), the intake agent's a model on the fake
OpenAI-compatible server that answers at once with an amount of its own (they disagree). The
shadow workers are processes of the stack, as ``handrail dev services up`` starts them.
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
from tests.libs.cli.test_task_ops_bus import cli_env, results, submit
from tests.services.test_limits_bus import ledger_entries

from handrail.messages import StepCompleted, TaskStatus

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

MODEL = "shadow-gpt"
KEY_ENV = "HANDRAIL_SHADOW_MODEL_KEY"
KEY = f"sk-shadow-{uuid.uuid4().hex}"


def hasty_intake(received: Received) -> Reply:
    """A model that answers without looking anything up, and gets the amount wrong."""
    task = json.loads(next(m["content"] for m in received.body["messages"] if m["role"] == "user"))
    claim = task["context"]["input"]
    employee = {"employee_id": claim["employee_id"], "name": "?", "active": True, "department": "?", "manager_id": "?"}
    return answer({"employee": employee, "amount": claim["amount"], "currency": claim["currency"],
                   "amount_usd": 1.0, "description": claim["description"]})  # fmt: skip


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeModelServer]:
    with serving(hasty_intake) as server:
        yield server


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory, model_server: FakeModelServer) -> Path:
    config = tmp_path_factory.mktemp("shadow") / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    first = (config / "prompts" / "expense-approver" / "1.md").read_text()
    (config / "prompts" / "expense-approver" / "2.md").write_text(first + "\nState your reasons briefly.\n")
    agents = yaml.safe_load((config / "agents.yaml").read_text())
    agents["agents"]["expense-approver"]["shadow"] = {"prompt": "2"}
    agents["agents"]["expense-intake"]["shadow"] = {"model": MODEL}
    (config / "agents.yaml").write_text(yaml.safe_dump(agents))
    catalogue = yaml.safe_load((config / "models.yaml").read_text())
    catalogue["models"][MODEL] = openai_model(model_server, KEY_ENV)
    (config / "models.yaml").write_text(yaml.safe_dump(catalogue))
    return config


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {KEY_ENV: KEY}


def shadow_report(stack: Stack, agent: str) -> tuple[int, list[dict[str, Any]], str]:
    done = run_handrail("shadow", "report", agent, "--json", env=cli_env(stack))
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stdout + done.stderr


async def reported(stack: Stack, agent: str, runs: int, timeout_s: float = 60) -> dict[str, Any]:
    for _ in range(int(timeout_s * 2)):
        code, rows, _ = shadow_report(stack, agent)
        if code == 0 and rows and rows[0]["runs"] >= runs:
            return rows[0]
        await asyncio.sleep(0.5)
    raise AssertionError(f"the shadow of {agent} compared fewer than {runs} steps: {shadow_report(stack, agent)}")


async def test_shadows_compare_every_live_step_and_touch_nothing_of_the_tasks(
    stack: Stack, model_server: FakeModelServer
) -> None:
    # The shadows start from where the topics are when they first start: wait until both follow them.
    for name in ("shadow-expense-approver", "shadow-expense-intake"):
        assert stack.is_running(name), stack.log(name)
    await asyncio.sleep(3)
    tasks = [await submit(stack, "expense-approval", "shadowed") for _ in range(3)]
    done = [(await results(stack, t, 1))[0] for t in tasks]
    assert all(r.status == TaskStatus.COMPLETED and r.steps == 2 for r in done), done

    approver = await reported(stack, "expense-approver", 3)
    assert approver["candidate"] == "expense-approver@2"
    assert (approver["runs"], approver["same"], approver["agreement"]) == (3, 3, 1.0), approver

    intake = await reported(stack, "expense-intake", 3)
    assert intake["candidate"] == f"model:{MODEL}" and intake["changed"] == 3 and intake["agreement"] == 0, intake
    assert intake["shadow_cost_usd_per_step"] > 0, "the shadow's model cost is counted, apart"
    assert any(op["path"] == "/amount_usd" for op in intake["recent"][0]["patch"]), intake["recent"][0]
    assert len(model_server.requests(MODEL)) == 3, "one shadow call per live step"

    # Nothing of it reached the tasks: one ledger entry each, and only the live step reports.
    for task_id in tasks:
        assert len(ledger_entries(stack, task_id)) == 1
        reports = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
        assert sorted(r.step for r in reports) == ["decide", "intake"], reports

    table = run_handrail("shadow", "report", "expense-intake", env=cli_env(stack))
    assert table.returncode == 0 and "0.0% the same" in table.stdout and "/amount_usd" in table.stdout, table.stdout
    nothing = run_handrail("shadow", "report", "nobody", env=cli_env(stack))
    assert nothing.returncode == 2 and "'nobody' is not in agents.yaml" in nothing.stderr, nothing.stderr
