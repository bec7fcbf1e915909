"""Behavioural baselines on real Kafka, Redis and HTTP: a task unlike its agent's completed ones is a
metric, an event, an audit record and, per the agent's autonomy, a review or a halt."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tests.fixtures.stack import Stack
from tests.services import test_review_bus as review_stack
from tests.services.test_review_bus import auth, new_id, pending_review, show
from tests.services.test_top_up_bus import audit_of

from handrail.baselines import BEHAVIOUR_DEVIATION, Measure
from handrail.client import HandrailClient
from handrail.messages import ControlRecord, DecisionEvent, DecisionEvents, TaskStatus
from handrail.state import connect_redis
from handrail.state.baselines import BaselineStore

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

HERE = Path(__file__).parent
stack_env = review_stack.stack_env
http = review_stack.http

USUAL = {"amount": 10, "currency": "EUR"}
UNKNOWN_CURRENCY = {"amount": 10, "currency": "XXX"}


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The review tests' contracts and reviewers, plus the two wandering agents."""
    config = review_stack.review_config(tmp_path_factory)
    for name in ("agents", "workflows"):
        merged = yaml.safe_load((config / f"{name}.yaml").read_text())
        merged[name].update(yaml.safe_load((HERE / "config" / f"baseline-{name}.yaml").read_text())[name])
        (config / f"{name}.yaml").write_text(yaml.safe_dump(merged))
    shutil.copytree(HERE / "config" / "prompts" / "wanderer", config / "prompts" / "wanderer")
    return config


async def learnt(stack: Stack, agent: str, tasks: int, timeout_s: float = 60) -> None:
    """Wait until the agent's baseline has learnt from ``tasks`` completed tasks (the results are read
    by the circuit-breaker as they come)."""
    redis = connect_redis(stack.redis_url)
    store = BaselineStore(redis, stack.env["HANDRAIL_REDIS_PREFIX"])
    try:
        deadline = time.monotonic() + timeout_s
        while (baseline := await store.baseline(agent)).tasks < tasks:
            assert time.monotonic() < deadline, f"{agent}'s baseline learnt from {baseline.tasks} tasks only"
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()


async def deviations_of(stack: Stack, task_id: str) -> list[DecisionEvent]:
    return [
        e
        for v in await stack.read(stack.topics.events, task_id)
        for e in DecisionEvents.model_validate_json(v).events
        if e.kind == "baseline"
    ]


async def test_a_task_unlike_its_agents_completed_ones_goes_to_a_person_or_ends_halted(
    client: HandrailClient, stack: Stack, http: httpx.AsyncClient
) -> None:
    usual = [
        await client.submit(workflow, USUAL, task_id=new_id("usual"))
        for workflow in ("wander-test", "wander-trusted-test")
        for _ in range(2)
    ]
    for task_id in usual:
        assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED
    await learnt(stack, "wanderer", 2)
    await learnt(stack, "wanderer-trusted", 2)

    odd = await client.submit("wander-test", UNKNOWN_CURRENCY, task_id=new_id("odd"))
    odd_trusted = await client.submit("wander-trusted-test", UNKNOWN_CURRENCY, task_id=new_id("odd-trusted"))
    still_usual = await client.submit("wander-trusted-test", USUAL, task_id=new_id("still-usual"))

    # Audit-based: the deviation halts the task, and a halted audit-based step ends it.
    ended = await client.wait_for_result(odd_trusted, timeout_s=90)
    assert ended.status == TaskStatus.HALTED and ended.error_type == BEHAVIOUR_DEVIATION, ended
    assert "error_rate 0.5 against agent wanderer-trusted's baseline mean 0 over 2 tasks" in (ended.reason or "")
    assert (await client.wait_for_result(still_usual, timeout_s=60)).status == TaskStatus.COMPLETED
    assert await deviations_of(stack, still_usual) == []

    # Exception-based: a person looks at it first, and approving lifts the halt.
    review = await pending_review(http, odd, timeout_s=90)
    detail = await show(http, review["review_id"])
    assert detail["trigger"] == "halt" and detail["halt_error_type"] == BEHAVIOUR_DEVIATION, detail
    approved = await http.post(
        f"/api/reviews/{review['review_id']}/approve", headers=auth("ana"), json={"reason": "new currency, fine"}
    )
    assert approved.status_code == 200, approved.text
    finished = await client.wait_for_result(odd, timeout_s=90)
    assert finished.status == TaskStatus.COMPLETED, finished
    halts = [ControlRecord.model_validate_json(v) for v in await stack.read(stack.topics.control, f"halt:task:{odd}")]
    assert [h.state for h in halts][-1] == "resumed" and halts[-1].by == "reviewer:ana", halts

    # Each deviation is an event, audit records (the deviation, the halt) and a metric, once per task
    # and measure, though the approved step ran its failing call again.
    for task_id, agent in ((odd, "wanderer"), (odd_trusted, "wanderer-trusted")):
        [event] = await deviations_of(stack, task_id)
        assert (event.agent, event.name, event.outcome) == (agent, Measure.ERROR_RATE.value, "deviation")
        records = await audit_of(stack, task_id)
        [found] = [r for r in records if r.action == "baseline.deviation"]
        assert found.actor == "service:circuit-breaker" and found.details["measure"] == "error_rate"
        assert found.details["baseline_tasks"] == 2 and found.details["escalated"] is True
        assert [r for r in records if r.action == "halt.halted" and r.actor == "service:circuit-breaker"]
    breaker = stack.processes["circuit-breaker"]
    async with httpx.AsyncClient(timeout=10) as plain:
        metrics = (await plain.get(f"http://127.0.0.1:{breaker.http_port}/metrics")).text
    for agent in ("wanderer", "wanderer-trusted"):
        counted = re.search(
            rf'handrail_behaviour_deviations_total\{{agent="{agent}",measure="error_rate"\}} (\S+)', metrics
        )
        assert counted is not None and float(counted.group(1)) == 1.0, metrics
    assert 'handrail_behaviour_baseline_tasks{agent="wanderer"}' in metrics
