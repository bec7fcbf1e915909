"""The router's routing decision: named workflows as is, ``auto`` by rules, then by a cheap model.

``routing.yaml`` and ``models.yaml`` are written per test into a config dir of
its own; the classifier's model is the fake model server (real HTTP, OpenAI
shape), so the chain, the parsing, the price table and the failures are the
real ones.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from pydantic import SecretStr
from tests.fixtures.model_server import FakeModelServer, answer, hang, status, text

from handrail.contracts import WorkflowSpec, load_contracts
from handrail.contracts.routing import load_routing
from handrail.errors import ContractError, InputRejected
from handrail.messages import TaskSubmitted
from handrail.state import connect_redis
from handrail.tools import default_registry
from handrail_router.decisions import DecisionStore
from handrail_router.routing import RouteDecision, RouteKind, TaskRouter, load_task_router

PROJECT_CONFIG = Path(__file__).resolve().parents[3] / "config"
CHEAP = "cheap-router"
KEY_ENV = "ROUTER_TEST_MODEL_KEY"
KEYS = {KEY_ENV: SecretStr("sk-router-test")}
CLAIM = {"employee_id": "E100", "amount": 120, "currency": "EUR", "description": "lunch"}
#: Long enough for a loopback round trip, short enough that the timeout test stays quick.
TIMEOUT_S = 2.0


def workflows() -> dict[str, WorkflowSpec]:
    """The shipped expense workflow, and a second one for the classifier to choose from."""
    shipped = dict(load_contracts(PROJECT_CONFIG, default_registry().names()).workflows)
    travel = shipped["expense-approval"].model_copy(
        update={"name": "travel-booking", "description": "Book flights and hotels for a trip."}
    )
    return {**shipped, "travel-booking": travel}


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def config_dir(tmp_path: Path, model_server: FakeModelServer) -> Path:
    """A config dir whose models.yaml points the cheap model at the fake server (no retries: quick failures)."""
    config = tmp_path / "config"
    config.mkdir()
    catalogue = {
        "retry": {"base_delay_s": 0.01, "max_delay_s": 0.02},
        "models": {
            CHEAP: {
                "provider": "openai",
                "base_url": f"{model_server.url}/v1",
                "api_key_env": KEY_ENV,
                "timeout_s": 10,
                "max_retries": 0,
                "price": {"input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0},
            }
        },
    }
    (config / "models.yaml").write_text(yaml.safe_dump(catalogue))
    return config


def write_routing(config: Path, body: Mapping[str, Any]) -> Path:
    (config / "routing.yaml").write_text(yaml.safe_dump(dict(body)))
    return config


def classifier(**overrides: Any) -> dict[str, Any]:
    return {"model_chain": [CHEAP], "confidence_floor": 0.8, "below_floor": "review", **overrides}


def task(workflow: str = "auto", task_input: Mapping[str, Any] = CLAIM, **extra: Any) -> TaskSubmitted:
    return TaskSubmitted(task_id=f"r-{uuid.uuid4().hex[:10]}", workflow=workflow, input=dict(task_input), **extra)


def router_for(config: Path, client: httpx.AsyncClient, timeout_s: float = TIMEOUT_S) -> TaskRouter:
    return load_task_router(config, workflows(), timeout_s=timeout_s, http_client=client, api_keys=KEYS)


# --- routing.yaml: optional, and validated at start-up ---------------------------------------------


def test_without_a_routing_file_there_is_no_routing_and_the_shipped_file_has_no_classifier(tmp_path: Path) -> None:
    assert load_routing(tmp_path, workflows()) is None
    shipped = load_task_router(PROJECT_CONFIG, workflows(), timeout_s=1)
    assert shipped.config is not None and shipped.classifier is None
    assert [(r.name, r.when, r.workflow) for r in shipped.config.rules] == [
        ("vendor-checks", {"kind": "vendor"}, "vendor-due-diligence")
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"classifer": {}}, r"routing.yaml: field 'classifer': Extra inputs are not permitted"),
        (
            {"classifier": classifier(confidence_floor=1.5)},
            r"field 'classifier.confidence_floor': .*less than or equal",
        ),
        ({"classifier": classifier(below_floor="default")}, r"field 'classifier': .*'default_workflow': required"),
        ({"classifier": classifier(below_floor="maybe")}, r"field 'classifier.below_floor'"),
        (
            {"classifier": classifier(below_floor="default", default_workflow="payroll")},
            r"routing.yaml: field 'classifier.default_workflow': unknown workflow 'payroll'",
        ),
        (
            {"rules": [{"name": "r", "when": {"kind": "x"}, "workflow": "payroll"}]},
            r"routing.yaml: field 'rules.0.workflow': unknown workflow 'payroll' \(workflows.yaml declares",
        ),
        ({"rules": [{"name": "r", "when": {}, "workflow": "expense-approval"}]}, r"field 'rules.0.when'"),
        (
            {"rules": [{"name": "r", "when": {"a": 1}, "workflow": "expense-approval"}] * 2},
            r"field 'rules': rule names repeat",
        ),
        ([1, 2], r"routing.yaml: expected a mapping"),
    ],
)
def test_a_bad_routing_file_names_the_file_and_the_field(tmp_path: Path, body: Any, expected: str) -> None:
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(ContractError, match=expected):
        load_routing(tmp_path, workflows())


def test_no_workflow_may_be_called_auto(tmp_path: Path) -> None:
    named_auto = {**workflows(), "auto": workflows()["expense-approval"]}
    with pytest.raises(ContractError, match=r"workflows.yaml: workflow 'auto': the name is reserved"):
        load_routing(tmp_path, named_auto)


def test_the_classifier_chain_must_name_declared_models_and_have_their_keys(
    config_dir: Path, http_client: httpx.AsyncClient
) -> None:
    write_routing(config_dir, {"classifier": classifier(model_chain=[CHEAP, "gpt-5-huge"])})
    with pytest.raises(ContractError, match=r"routing.yaml: classifier: field 'model_chain.1': unknown model"):
        router_for(config_dir, http_client)
    write_routing(config_dir, {"classifier": classifier()})
    with pytest.raises(ContractError, match=rf"{KEY_ENV} is not set \(classifier uses this model\)"):
        load_task_router(config_dir, workflows(), timeout_s=1, http_client=http_client, api_keys={})


# --- the decision ----------------------------------------------------------------------------------


async def test_a_named_workflow_is_used_as_is_without_a_model_call(
    config_dir: Path, model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    router = router_for(write_routing(config_dir, {"classifier": classifier()}), http_client)
    decision = await router.route(task("expense-approval"))
    assert (decision.kind, decision.workflow) == (RouteKind.NAMED, "expense-approval")
    # An unknown name is the handler's to refuse, as before: routing does not guess.
    assert (await router.route(task("payroll"))).workflow == "payroll"
    assert model_server.requests() == []


async def test_rules_come_first_and_compare_exactly(
    config_dir: Path, model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    rules = [
        {"name": "trips", "when": {"kind": "trip", "booked": True}, "workflow": "travel-booking"},
        {"name": "claims", "when": {"kind": "claim"}, "workflow": "expense-approval"},
    ]
    router = router_for(write_routing(config_dir, {"rules": rules, "classifier": classifier()}), http_client)
    model_server.script(CHEAP, answer({"workflow": "expense-approval", "confidence": 0.99}))

    trip = await router.route(task(task_input={"kind": "trip", "booked": True}))
    assert (trip.kind, trip.workflow, trip.rule) == (RouteKind.RULE, "travel-booking", "trips")
    claim = await router.route(task(task_input={**CLAIM, "kind": "claim"}))
    assert (claim.kind, claim.workflow, claim.rule) == (RouteKind.RULE, "expense-approval", "claims")
    assert model_server.requests() == []
    # `booked: 1` is not `booked: true`: no rule matches, so the model decides.
    other = await router.route(task(task_input={"kind": "trip", "booked": 1}))
    assert other.kind == RouteKind.MODEL and len(model_server.requests(CHEAP)) == 1


async def test_a_confident_model_routes_and_reports_what_it_cost(
    config_dir: Path, model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    router = router_for(write_routing(config_dir, {"classifier": classifier()}), http_client)
    model_server.script(CHEAP, answer({"workflow": "travel-booking", "confidence": 0.91, "reason": "a trip"}))
    decision = await router.route(task(metadata={"routing_hint": "flights to Oslo", "ticket": "T-1"}))

    assert (decision.kind, decision.workflow, decision.confidence) == (RouteKind.MODEL, "travel-booking", 0.91)
    assert decision.reason == "a trip" and decision.model == CHEAP
    assert (decision.input_tokens, decision.output_tokens) == (100, 20)  # what the server reported
    assert decision.cost_usd == pytest.approx((100 * 1.0 + 20 * 2.0) / 1_000_000)
    (request,) = model_server.requests(CHEAP)
    assert request.headers["authorization"] == "Bearer sk-router-test"
    system = request.system_text()
    assert "- travel-booking: Book flights and hotels for a trip." in system
    assert "- expense-approval: Approve an expense claim" in system
    user = json.loads(next(m["content"] for m in request.body["messages"] if m["role"] == "user"))
    assert user == {"input": CLAIM, "hint": "flights to Oslo"}
    assert decision.details()["confidence"] == 0.91 and "rule" not in decision.details()


@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        ([answer({"workflow": "travel-booking", "confidence": 0.4})], "below the floor 0.80"),
        ([answer({"workflow": "payroll", "confidence": 0.99})], "no known workflow ('payroll')"),
        ([text("Probably an expense claim.")], "unusable"),
        ([status(503)], "unavailable"),
    ],
)
@pytest.mark.parametrize("below_floor", ["review", "default"])
async def test_an_unsure_unusable_or_absent_model_takes_the_configured_safe_way(
    config_dir: Path,
    model_server: FakeModelServer,
    http_client: httpx.AsyncClient,
    replies: list[Any],
    reason: str,
    below_floor: str,
) -> None:
    spec = classifier(below_floor=below_floor, default_workflow="expense-approval")
    router = router_for(write_routing(config_dir, {"classifier": spec}), http_client)
    model_server.script(CHEAP, *replies)
    decision = await router.route(task())

    assert reason in decision.reason
    if below_floor == "review":
        assert (decision.kind, decision.workflow) == (RouteKind.REVIEW, None)
    else:
        assert (decision.kind, decision.workflow) == (RouteKind.DEFAULT, "expense-approval")
        assert "the default workflow, because" in decision.describe()


async def test_a_model_slower_than_the_routing_timeout_takes_the_safe_way(
    config_dir: Path, model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    spec = classifier(below_floor="default", default_workflow="expense-approval")
    router = router_for(write_routing(config_dir, {"classifier": spec}), http_client, timeout_s=0.3)
    model_server.script(CHEAP, hang())
    started = asyncio.get_running_loop().time()
    decision = await router.route(task())
    assert asyncio.get_running_loop().time() - started < 2  # not the model's own 10 s timeout
    assert (decision.kind, decision.workflow) == (RouteKind.DEFAULT, "expense-approval")
    assert "did not answer within 0.3 s" in decision.reason


@pytest.mark.parametrize(
    ("routing", "why"),
    [
        (None, "routing is not configured"),
        ({"rules": [{"name": "trips", "when": {"kind": "trip"}, "workflow": "travel-booking"}]}, "no classifier"),
    ],
)
async def test_auto_without_a_way_to_route_is_an_unknown_workflow(
    config_dir: Path, http_client: httpx.AsyncClient, routing: dict[str, Any] | None, why: str
) -> None:
    if routing is not None:
        write_routing(config_dir, routing)
    router = router_for(config_dir, http_client)
    with pytest.raises(InputRejected, match=why) as caught:
        await router.route(task())
    assert caught.value.error_type == "unknown_workflow" and "'auto'" in caught.value.reason


# --- a redelivery never asks the model again --------------------------------------------------------


@pytest.mark.bus
async def test_the_first_decision_for_a_task_is_the_one_kept(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    try:
        store = DecisionStore(redis, prefix)
        first = RouteDecision(kind=RouteKind.MODEL, workflow="expense-approval", reason="sure", confidence=0.9)
        other = RouteDecision(kind=RouteKind.REVIEW, workflow=None, reason="not sure this time")
        assert await store.get("t-1") is None
        assert (await store.keep("t-1", "tasks/0/7", first)).decision == first
        kept = await store.keep("t-1", "tasks/0/7", other)
        assert (kept.submission, kept.decision) == ("tasks/0/7", first)
        assert await store.get("t-1") == kept
        assert 0 < await redis.ttl(f"{prefix}{{t-1}}:routing") <= 7 * 24 * 3600
    finally:
        await redis.aclose()
