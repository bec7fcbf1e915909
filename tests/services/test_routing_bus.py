"""``auto`` tasks routed by the router on real Kafka and Redis: by rule, by a cheap model, or the safe way.

The stack's own config dir adds a second workflow (``travel-booking``) for the
classifier to choose from, points a cheap model at the fake model server (a
real HTTP server in this process) through its ``models.yaml``, and routes with
a ``routing.yaml``: one rule, then the classifier, below the floor to the
default workflow. A second config dir differs only in ``below_floor: review``;
one test restarts the router on it. The agents stay on the scripted model, so
every model request the server sees is the router's.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fixtures.model_server import FakeModelServer, Received, Reply, answer
from tests.fixtures.stack import PROJECT_ROOT, Stack

from handrail.audit.record import AuditRecord
from handrail.client import HandrailClient
from handrail.messages import TaskStatus

pytestmark = [pytest.mark.bus, pytest.mark.timeout(180)]

CHEAP = "cheap-router"
KEY_ENV = "HANDRAIL_ROUTING_MODEL_KEY"
KEY = f"sk-routing-{uuid.uuid4().hex}"
#: The fake server reports 100 tokens in and 20 out per call; at 1 and 2 USD per million tokens:
CLASSIFY_COST_USD = (100 * 1.0 + 20 * 2.0) / 1_000_000
RULE_DESCRIPTION = "quarterly team lunch"
UNSURE = "unsure"


def play_classifier(received: Received) -> Reply:
    """Sure it is an expense claim, unless the description says ``unsure``: then a weak guess at travel."""
    task = json.loads(next(m["content"] for m in received.body["messages"] if m["role"] == "user"))
    if UNSURE in task["input"]["description"]:
        return answer({"workflow": "travel-booking", "confidence": 0.4, "reason": "maybe a trip"})
    return answer({"workflow": "expense-approval", "confidence": 0.95, "reason": "an expense claim"})


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer()
    server.responder = play_classifier
    server.start()
    yield server
    server.stop()


def routing(below_floor: str) -> dict[str, Any]:
    return {
        "rules": [{"name": "team-lunch", "when": {"description": RULE_DESCRIPTION}, "workflow": "expense-approval"}],
        "classifier": {
            "model_chain": [CHEAP],
            "confidence_floor": 0.8,
            "below_floor": below_floor,
            "default_workflow": "expense-approval",
        },
    }


@pytest.fixture(scope="module")
def config_dirs(tmp_path_factory: pytest.TempPathFactory, model_server: FakeModelServer) -> dict[str, Path]:
    """Two config dirs, ``default`` and ``review``, that differ only in routing.yaml's ``below_floor``."""
    root = tmp_path_factory.mktemp("routing-bus")
    base = root / "base"
    shutil.copytree(PROJECT_ROOT / "config", base)
    workflows = yaml.safe_load((base / "workflows.yaml").read_text())
    expense = workflows["workflows"]["expense-approval"]
    workflows["workflows"]["travel-booking"] = {
        "description": "Book flights and hotels for a business trip.",
        "goal": "Book the trip of employee {employee_id}",
        "input_schema": expense["input_schema"],
        "steps": [{"name": "plan", "agent": "expense-intake", "output_schema": {"type": "object"}}],
    }
    (base / "workflows.yaml").write_text(yaml.safe_dump(workflows))
    catalogue = yaml.safe_load((base / "models.yaml").read_text())
    catalogue["models"][CHEAP] = {
        "provider": "openai",
        "base_url": f"{model_server.url}/v1",
        "api_key_env": KEY_ENV,
        "timeout_s": 5,
        "max_retries": 0,
        "price": {"input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0},
    }
    (base / "models.yaml").write_text(yaml.safe_dump(catalogue))
    dirs = {}
    for below_floor in ("default", "review"):
        config = root / below_floor
        shutil.copytree(base, config)
        (config / "routing.yaml").write_text(yaml.safe_dump(routing(below_floor)))
        dirs[below_floor] = config
    return dirs


@pytest.fixture(scope="module")
def stack_config_dir(config_dirs: dict[str, Path]) -> Path:
    return config_dirs["default"]


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {KEY_ENV: KEY}


def claim(description: str) -> dict[str, Any]:
    return {"employee_id": "E100", "amount": 120, "currency": "EUR", "description": description}


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def requests_about(server: FakeModelServer, description: str) -> list[Received]:
    return [r for r in server.requests(CHEAP) if description in json.dumps(r.body["messages"])]


async def routing_of(stack: Stack, task_id: str) -> dict[str, Any]:
    """The ``routing`` the router recorded in the task's ``task.opened`` audit record."""
    records = [AuditRecord.model_validate_json(v) for v in await stack.read(stack.topics.audit, task_id)]
    (opened,) = [r for r in records if r.action == "task.opened"]
    routing: dict[str, Any] = opened.details["routing"]
    assert opened.workflow == (routing.get("workflow") or "auto")
    return routing


async def test_an_auto_task_is_classified_into_expense_approval_and_completes(
    client: HandrailClient, stack: Stack, model_server: FakeModelServer
) -> None:
    description = f"client dinner {uuid.uuid4().hex[:8]}"
    task_id = await client.submit(
        "auto", claim(description), task_id=new_id("auto"), metadata={"routing_hint": "expenses"}
    )
    result = await client.wait_for_result(task_id, timeout_s=60)

    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.workflow == "expense-approval" and result.steps == 2
    assert result.output is not None and result.output["decision"] == "approved"
    # The agents are scripted (free): what the task cost is the classifier's call, charged to its budget.
    assert result.cost_usd == pytest.approx(CLASSIFY_COST_USD)
    routing = await routing_of(stack, task_id)
    assert routing["kind"] == "model" and routing["workflow"] == "expense-approval"
    assert (routing["confidence"], routing["model"], routing["input_tokens"]) == (0.95, CHEAP, 100)
    (request,) = requests_about(model_server, description)
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "- travel-booking: Book flights and hotels" in request.system_text()
    user = json.loads(next(m["content"] for m in request.body["messages"] if m["role"] == "user"))
    assert user == {"input": claim(description), "hint": "expenses"}


async def test_a_matching_rule_routes_without_asking_the_model(
    client: HandrailClient, stack: Stack, model_server: FakeModelServer
) -> None:
    task_id = await client.submit("auto", claim(RULE_DESCRIPTION), task_id=new_id("rule"))
    result = await client.wait_for_result(task_id, timeout_s=60)

    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.workflow == "expense-approval" and result.cost_usd == 0
    assert await routing_of(stack, task_id) == {
        "kind": "rule",
        "workflow": "expense-approval",
        "rule": "team-lunch",
        "reason": "rule 'team-lunch' matched",
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
    }
    assert requests_about(model_server, RULE_DESCRIPTION) == []


async def test_an_unsure_classification_runs_the_default_workflow(
    client: HandrailClient, stack: Stack, model_server: FakeModelServer
) -> None:
    description = f"{UNSURE} {uuid.uuid4().hex[:8]}"
    task_id = await client.submit("auto", claim(description), task_id=new_id("default"))
    result = await client.wait_for_result(task_id, timeout_s=60)

    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.workflow == "expense-approval"
    routing = await routing_of(stack, task_id)
    assert (routing["kind"], routing["workflow"], routing["proposed"]) == (
        "default",
        "expense-approval",
        "travel-booking",
    )
    assert routing["confidence"] == 0.4 and "below the floor 0.80" in routing["reason"]
    assert len(requests_about(model_server, description)) == 1


async def test_resubmitting_an_auto_task_id_yields_one_result_and_one_model_call(
    client: HandrailClient, stack: Stack, model_server: FakeModelServer
) -> None:
    description = f"twice {uuid.uuid4().hex[:8]}"
    task_id = new_id("twice")
    await client.submit("auto", claim(description), task_id=task_id)
    await client.submit("auto", claim(description), task_id=task_id)
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED
    assert len(await stack.results_for(task_id, settle_s=2)) == 1
    assert len(requests_about(model_server, description)) == 1


async def test_a_named_workflow_is_not_classified(
    client: HandrailClient, stack: Stack, model_server: FakeModelServer
) -> None:
    description = f"named {uuid.uuid4().hex[:8]}"
    task_id = await client.submit("expense-approval", claim(description), task_id=new_id("named"))
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert (await routing_of(stack, task_id))["kind"] == "named"
    assert requests_about(model_server, description) == []


async def test_with_review_configured_an_unsure_classification_ends_the_task_halted(
    client: HandrailClient, stack: Stack, config_dirs: dict[str, Path], model_server: FakeModelServer
) -> None:
    stack.stop("router")
    stack.start("router", {"HANDRAIL_CONFIG_DIR": str(config_dirs["review"])})
    try:
        description = f"{UNSURE} {uuid.uuid4().hex[:8]}"
        task_id = await client.submit("auto", claim(description), task_id=new_id("review"))
        result = await client.wait_for_result(task_id, timeout_s=60)

        assert result.status == TaskStatus.HALTED
        assert result.error_type == "classification_uncertain" and result.workflow == "auto"
        assert result.reason is not None
        assert "below the floor 0.80" in result.reason and "'travel-booking'" in result.reason
        assert result.steps == 0 and result.cost_usd == pytest.approx(CLASSIFY_COST_USD)
        routing = await routing_of(stack, task_id)
        assert (routing["kind"], routing["proposed"], routing["confidence"]) == ("review", "travel-booking", 0.4)
        assert await stack.read(stack.topics.steps, task_id) == []
        assert len(await stack.results_for(task_id, settle_s=1)) == 1
        # A sure classification still runs on this config.
        sure = await client.submit("auto", claim(f"taxi {uuid.uuid4().hex[:8]}"), task_id=new_id("sure"))
        assert (await client.wait_for_result(sure, timeout_s=60)).status == TaskStatus.COMPLETED
    finally:
        stack.stop("router")
        stack.start("router")
