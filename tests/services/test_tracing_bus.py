"""One task, one trace: spans from every service, joined by W3C trace context in Kafka headers.

The services export to a real OTLP/HTTP receiver, configured only through the standard
OpenTelemetry variables, as a collector would receive them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.fixtures.metrics import scrape, total
from tests.fixtures.otlp import OtlpReceiver, otlp_receiver
from tests.fixtures.stack import Stack

from handrail.client import HandrailClient
from handrail.messages import TaskStatus

pytestmark = [pytest.mark.bus, pytest.mark.timeout(180)]

#: The router is named by its operator; every other service keeps Handrail's name for it.
ROUTER_NAME = "edge-router"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=bus-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=bus-test,service.namespace=handrail",
        # The batch processor's delay: short, so the test does not wait 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


@pytest.fixture(scope="module")
def stack_process_env() -> dict[str, dict[str, str]]:
    return {"router": {"OTEL_SERVICE_NAME": ROUTER_NAME}}


def load_spans(receiver: OtlpReceiver) -> list[dict[str, Any]]:
    """What the receiver has, each span's ``service`` the stack's name for the process that made it."""
    names = {ROUTER_NAME: "router"}
    return [{**s, "service": names.get(s["service"], s["service"].removeprefix("handrail-"))} for s in receiver.spans()]


async def test_a_task_is_one_trace_across_all_services(
    client: HandrailClient, stack: Stack, receiver: OtlpReceiver
) -> None:
    claim = {"employee_id": "E100", "amount": 99, "currency": "USD", "description": "monitor"}
    task_id = await client.submit("expense-approval", claim, task_id=f"traced-{uuid.uuid4().hex[:8]}")
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED

    agent_spans: list[dict[str, Any]] = []
    for _ in range(50):  # spans are exported in batches, off the hot path
        spans = load_spans(receiver)
        agent_spans = [
            s
            for s in spans
            if s["attributes"].get("handrail.task_id") == task_id and s["name"].startswith("invoke_agent")
        ]
        if len(agent_spans) == 2:
            break
        await asyncio.sleep(0.2)
    assert len(agent_spans) == 2
    trace_id = agent_spans[0]["context"]["trace_id"]
    # A parent span ends (and is exported) after its children, and the circuit-breaker counts a step's
    # events after the step: wait until the trace is whole and every service has exported its part.
    every = {"router", "worker-expense-intake", "validator", "worker-expense-approver", "circuit-breaker"}
    for _ in range(50):
        in_trace = [s for s in load_spans(receiver) if s["context"]["trace_id"] == trace_id]
        ids = {s["context"]["span_id"] for s in in_trace}
        whole = all(s["parent_id"] in ids for s in in_trace if s["parent_id"] is not None)
        if whole and every <= {s["service"] for s in in_trace}:
            break
        await asyncio.sleep(0.2)
    services = {s["service"] for s in in_trace}
    assert every <= services
    assert all(s["context"]["trace_id"] == trace_id for s in agent_spans)

    by_id = {s["context"]["span_id"]: s for s in in_trace}
    names = Counter(s["name"] for s in in_trace)
    assert names["invoke_agent expense-intake"] == 1 and names["invoke_agent expense-approver"] == 1
    assert names["chat scripted"] == 3 + 3
    for tool in ("lookup_employee", "convert_currency", "check_policy", "record_decision"):
        [tool_span] = [s for s in in_trace if s["name"] == f"execute_tool {tool}"]
        assert tool_span["attributes"]["gen_ai.tool.name"] == tool
        parent = by_id[tool_span["parent_id"]]
        assert parent["name"].startswith("invoke_agent")  # a tool call is a child of its step
    chat = next(s for s in in_trace if s["name"] == "chat scripted")
    assert chat["attributes"]["gen_ai.operation.name"] == "chat"
    assert chat["attributes"]["gen_ai.provider.name"] == "scripted"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] > 0
    assert by_id[chat["parent_id"]]["name"].startswith("invoke_agent")

    # Every span but the root has its parent in the same trace: the hops are joined, not parallel roots.
    roots = [s for s in in_trace if s["parent_id"] is None]
    assert len(roots) == 1 and roots[0]["service"] == "router"
    assert all(s["parent_id"] in by_id for s in in_trace if s["parent_id"] is not None)

    # The resource is the standard variables': the operator's name wins over Handrail's, attributes are added.
    for span in in_trace:
        expected = ROUTER_NAME if span["service"] == "router" else f"handrail-{span['service']}"
        assert span["resource"]["service.name"] == expected
        assert span["resource"]["deployment.environment.name"] == "bus-test"
        assert span["resource"]["service.namespace"] == "handrail"
    assert receiver.requests and all(r.get("x-tenant") == "bus-test" for r in receiver.requests)


async def test_services_serve_the_agent_metrics(client: HandrailClient, stack: Stack) -> None:
    claim = {"employee_id": "E102", "amount": 50, "currency": "EUR", "description": "books"}
    task_id = await client.submit("expense-approval", claim, task_id=f"metered-{uuid.uuid4().hex[:8]}")
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED

    validator = await scrape(stack, "validator")
    assert total(validator, "handrail_tasks_finished_total", workflow="expense-approval", status="completed") >= 1
    assert total(validator, "handrail_task_steps_count", workflow="expense-approval") >= 1
    assert total(validator, "handrail_workflow_min_steps", workflow="expense-approval") == 2
    assert total(validator, "handrail_handoffs_total", service="validator", outcome="ok") >= 2
    assert total(validator, "handrail_task_tokens_sum", workflow="expense-approval") > 0

    intake = await scrape(stack, "worker-expense-intake")
    assert total(intake, "handrail_tool_calls_total", tool="lookup_employee", outcome="ok") >= 1
    assert total(intake, "handrail_model_tokens_total", agent="expense-intake", direction="input") > 0
    assert total(intake, "handrail_call_seconds_count", kind="tool_call", name="convert_currency") >= 1
    assert total(intake, "handrail_handle_seconds_count", service="worker-expense-intake") >= 1

    router = await scrape(stack, "router")
    assert total(router, "handrail_messages_total", service="router", outcome="ok") >= 1
    async with httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{stack.processes['router'].http_port}/healthz", timeout=5)
    assert health.status_code == 200 and health.json() == {"kafka": True, "redis": True}
