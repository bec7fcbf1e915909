"""A task end to end on real Kafka and Redis with the OpenAI-compatible provider.

The intake agent's model chain points at the fake model server (a real HTTP
server in this process) through the stack's own ``models.yaml``; the server
plays a competent model that calls the intake tools and answers from their
results, after failing once with a 500 the worker must retry. The approver
stays on the built-in scripted model.

The stack is started inside the tests (``request.getfixturevalue``), so that
until the worker builds its provider from the catalogue the failure is the
test's own (xfail), not a fixture error. The stack fixture runs its own event
loop at set-up, so the tests are synchronous and run their bodies with
``asyncio.run``.
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
import redis.asyncio as aioredis
import yaml
from tests.fixtures.model_server import FakeModelServer, Received, Reply, answer, status, tool_call
from tests.fixtures.stack import PROJECT_ROOT, Stack

from handrail.client import HandrailClient
from handrail.messages import StepCompleted, TaskStatus
from handrail.prompts import PromptLibrary, PromptStore
from handrail.tools import observation_data

pytestmark = [pytest.mark.bus, pytest.mark.timeout(180)]

MODEL = "fake-gpt"
KEY_ENV = "HANDRAIL_E2E_MODEL_KEY"
KEY = f"sk-e2e-{uuid.uuid4().hex}"
NEEDS_CATALOGUE = (
    "needs the worker to build its provider from the catalogue: "
    "build_provider(agent, load_catalogue(settings.config_dir)) in handrail_worker/app.py"
)
NEEDS_PROMPTS = "needs the worker runner to render the active prompt version (StepRunner(prompts=PromptStore(...)))"


def play_intake(received: Received) -> Reply:
    """A model that does the intake step right: look up, convert, answer from what the tools said."""
    messages = received.body["messages"]
    task = json.loads(next(m["content"] for m in messages if m["role"] == "user"))
    claim = task["context"]["input"]
    results = [observation_data(m["content"]) for m in messages if m["role"] == "tool"]
    if not results:
        return tool_call("lookup_employee", {"employee_id": claim["employee_id"]})
    if len(results) == 1:
        return tool_call("convert_currency", {"amount": claim["amount"], "currency": claim["currency"]})
    return answer(
        {
            "employee": results[0],
            "amount": claim["amount"],
            "currency": claim["currency"],
            "amount_usd": results[1]["amount_usd"],
            "description": claim["description"],
        }
    )


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer()
    server.responder = play_intake
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory, model_server: FakeModelServer) -> Path:
    """The project's config/, with the intake agent on the fake server's OpenAI-compatible API."""
    config = tmp_path_factory.mktemp("openai-e2e") / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    agents = yaml.safe_load((config / "agents.yaml").read_text())
    agents["agents"]["expense-intake"]["model_chain"] = [MODEL]
    (config / "agents.yaml").write_text(yaml.safe_dump(agents))
    catalogue = yaml.safe_load((config / "models.yaml").read_text())
    catalogue["retry"] = {"base_delay_s": 0.05, "max_delay_s": 0.1}
    catalogue["models"][MODEL] = {
        "provider": "openai",
        "base_url": f"{model_server.url}/v1",
        "api_key_env": KEY_ENV,
        "timeout_s": 5,
        "max_retries": 2,
        "price": {"input_usd_per_1m": 10.0, "output_usd_per_1m": 30.0},
    }
    (config / "models.yaml").write_text(yaml.safe_dump(catalogue))
    return config


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {KEY_ENV: KEY}


def claim(label: str) -> dict[str, Any]:
    return {"employee_id": "E101", "amount": 200, "currency": "GBP", "description": f"{label}-{uuid.uuid4().hex[:8]}"}


def requests_for(server: FakeModelServer, description: str) -> list[Received]:
    return [r for r in server.requests(MODEL) if description in json.dumps(r.body["messages"])]


def test_a_task_completes_with_the_openai_compatible_provider(
    request: pytest.FixtureRequest, model_server: FakeModelServer
) -> None:
    stack: Stack = request.getfixturevalue("stack")
    asyncio.run(_task_completes(stack, model_server))


async def _task_completes(stack: Stack, model_server: FakeModelServer) -> None:
    model_server.script(MODEL, status(500))  # the first call fails; the worker retries it
    task_input = claim("e2e")
    async with HandrailClient(stack.bootstrap, stack.topics.prefix) as client:
        task_id = await client.submit("expense-approval", task_input, task_id=f"oai-{uuid.uuid4().hex[:10]}")
        result = await client.wait_for_result(task_id, timeout_s=60)

    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.output is not None and result.output["amount_usd"] == 254.0
    assert result.output["required_approver"] == "none" and result.cost_usd > 0
    seen = model_server.requests(MODEL)
    assert len(seen) == 4  # one 500, then lookup, convert, answer
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in seen)
    assert {t["function"]["name"] for t in seen[-1].body["tools"]} == {"lookup_employee", "convert_currency"}
    steps = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
    intake = next(s for s in steps if s.step == "intake")
    assert intake.output["employee"]["name"] == "Ben Ode"
    assert any(d.name == f"openai/{MODEL}" for d in intake.decisions if d.kind == "model_call")
    assert KEY not in stack.log("worker-expense-intake")


def test_prompt_activation_and_rollback_reach_the_next_step_without_a_restart(
    request: pytest.FixtureRequest, model_server: FakeModelServer, stack_config_dir: Path
) -> None:
    stack: Stack = request.getfixturevalue("stack")
    asyncio.run(_prompt_switches(stack, model_server, stack_config_dir))


async def _prompt_switches(stack: Stack, model_server: FakeModelServer, stack_config_dir: Path) -> None:
    redis = aioredis.Redis.from_url(stack.redis_url)
    prompts = PromptStore(PromptLibrary(stack_config_dir / "prompts"), redis, stack.env["HANDRAIL_REDIS_PREFIX"])
    try:
        async with HandrailClient(stack.bootstrap, stack.topics.prefix) as client:

            async def system_prompt_of_a_new_task() -> str:
                task_input = claim("prompt")
                task_id = await client.submit("expense-approval", task_input, task_id=f"p-{uuid.uuid4().hex[:10]}")
                result = await client.wait_for_result(task_id, timeout_s=60)
                assert result.status == TaskStatus.COMPLETED, result.reason
                return requests_for(model_server, task_input["description"])[0].system_text()

            assert "an agent of the finance platform" in await system_prompt_of_a_new_task()
            await prompts.activate("expense-intake", "2", declared="1", by="e2e")
            assert "Do this in order" in await system_prompt_of_a_new_task()
            await prompts.rollback("expense-intake", by="e2e")
            assert "an agent of the finance platform" in await system_prompt_of_a_new_task()
    finally:
        await redis.aclose()
