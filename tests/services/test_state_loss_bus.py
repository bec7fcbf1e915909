"""Redis killed and restarted empty (no persistence): the state is rebuilt from Kafka before anything runs on it.

Every task in flight at the loss still ends with exactly one result, a task id
resubmitted after the loss is not run again, and every audit chain continues
where it stopped (``audit verify`` says intact).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from tests.fixtures.redis_server import PrivateRedis, run_private_redis
from tests.fixtures.stack import Stack, free_port, merged_config

from handrail.audit import AuditRecord, verify_chain
from handrail.client import HandrailClient
from handrail.messages import StepCompleted, TaskStatus
from handrail.signing import TrustStore, Verifier
from handrail.state import generation
from handrail_dev import signing_keys

pytestmark = [pytest.mark.bus, pytest.mark.timeout(300)]

HERE = Path(__file__).parent
#: The test agents and workflows this module's stack runs beside the demo's.
KEPT = ("drafter", "viewer", "lefty", "righty", "refine-test", "section-test")


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's contracts, the evaluator test workflow whose first step runs three times, and the parallel one."""
    return merged_config(tmp_path_factory.mktemp("state-loss-config"), "evaluator", "context", "parallel", keep=KEPT)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    yield from run_private_redis(tmp_path_factory, free_port(), persistent=False)


@pytest.fixture(scope="module")
def redis_url(private_redis: PrivateRedis) -> str:
    """This module's stack runs on a Redis of its own, which the tests kill."""
    return private_redis.url


def claim(amount: float) -> dict[str, object]:
    return {"employee_id": "E100", "amount": amount, "currency": "USD", "description": "cables"}


def lose_state(redis: PrivateRedis) -> None:
    """SIGKILL and start again: without persistence it comes back empty."""
    redis.kill()
    redis.start()


async def chain_of(stack: Stack, task_id: str) -> list[AuditRecord]:
    return [AuditRecord.model_validate_json(v) for v in await stack.read(stack.topics.audit, task_id)]


async def assert_chain_intact(stack: Stack, task_id: str) -> None:
    records = await chain_of(stack, task_id)
    # Signed too, by those who may have written each record: the rebuild keeps the signatures.
    verifier = Verifier(TrustStore.from_file(stack.run_dir / signing_keys.FOLDER))
    report = verify_chain([(None, r) for r in records], verifier)
    assert report.intact, f"audit chain of {task_id}: {report.describe()}"


async def test_a_task_resubmitted_after_the_loss_is_not_run_again(
    client: HandrailClient, stack: Stack, private_redis: PrivateRedis
) -> None:
    task_id = f"resubmit-{uuid.uuid4().hex[:8]}"
    await client.submit("expense-approval", claim(20), task_id=task_id)
    first = await client.wait_for_result(task_id, timeout_s=60)
    assert first.status == TaskStatus.COMPLETED, first.reason

    lose_state(private_redis)
    await client.submit("expense-approval", claim(20), task_id=task_id)
    after = f"after-{uuid.uuid4().hex[:8]}"
    await client.submit("expense-approval", claim(21), task_id=after)
    assert (await client.wait_for_result(after, timeout_s=90)).status == TaskStatus.COMPLETED

    results = await stack.results_for(task_id, settle_s=2.0)
    assert [r.message_id for r in results] == [first.message_id], "the resubmission ran the task again"
    await assert_chain_intact(stack, task_id)
    await assert_chain_intact(stack, after)
    assert "state rebuilt from Kafka" in "".join(stack.log(name) for name in stack.processes)


async def test_tasks_in_flight_at_the_loss_end_once_with_their_chains_whole(
    client: HandrailClient, stack: Stack, private_redis: PrivateRedis
) -> None:
    task_ids = [f"inflight-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    for i, task_id in enumerate(task_ids):
        await client.submit("expense-approval", claim(10 + i), task_id=task_id)
    await asyncio.sleep(1.0)  # some opened, some mid-way, some not yet routed
    lose_state(private_redis)

    for task_id in task_ids:
        result = await client.wait_for_result(task_id, timeout_s=120)
        assert result.status == TaskStatus.COMPLETED, f"{task_id}: {result.status} {result.reason}"
    for task_id in task_ids:
        results = await stack.results_for(task_id)
        assert len({r.message_id for r in results}) == 1, f"{task_id} got {len(results)} different results"
        assert await stack.dead_letters_for(task_id) == [], f"{task_id} was dead-lettered"
        await assert_chain_intact(stack, task_id)


async def test_the_guarded_scripts_refuse_an_empty_redis_until_it_is_rebuilt(
    stack: Stack, private_redis: PrivateRedis, client: HandrailClient
) -> None:
    lose_state(private_redis)
    redis = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        prefix = stack.env["HANDRAIL_REDIS_PREFIX"]
        for _ in range(100):  # the services notice within their poll interval and rebuild
            if await generation.current(redis, prefix) is not None:
                break
            await asyncio.sleep(0.1)
        assert await generation.current(redis, prefix) is not None, "nobody rebuilt the state"
    finally:
        await redis.aclose()
    task_id = f"later-{uuid.uuid4().hex[:8]}"
    await client.submit("expense-approval", claim(22), task_id=task_id)
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED


async def test_a_step_reported_before_the_loss_is_verified_after_it(
    client: HandrailClient, stack: Stack, private_redis: PrivateRedis
) -> None:
    # The agent took its handoff on and reported the step; then the state was lost before the validator
    # saw the step. No agent records taking a handoff on, so the rebuilt head is the one the handoff left
    # from: the step must chain on from there, not be refused as a lost hop.
    task_ids = [f"reported-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    stack.stop("validator")
    try:
        for i, task_id in enumerate(task_ids):
            await client.submit("expense-approval", claim(30 + i), task_id=task_id)
        for task_id in task_ids:
            for _ in range(600):
                if await stack.read(stack.topics.steps, task_id):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"{task_id}: the intake step was never reported")
        lose_state(private_redis)
    finally:
        stack.start("validator")
    for task_id in task_ids:
        result = await client.wait_for_result(task_id, timeout_s=120)
        assert result.status == TaskStatus.COMPLETED, f"{task_id}: {result.status} {result.reason}"
        assert await stack.dead_letters_for(task_id) == [], f"{task_id} was dead-lettered"
        await assert_chain_intact(stack, task_id)


async def test_a_step_iterating_at_the_loss_runs_exactly_its_runs(
    client: HandrailClient, stack: Stack, private_redis: PrivateRedis
) -> None:
    # The run a step is on travels in its context (evaluations.<step>), not in Redis: a loss between two runs
    # neither starts the count again nor runs a step twice, and the chain goes on through every run.
    task_ids = [f"iterating-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    drafter = "worker-drafter"
    stack.stop(drafter)
    try:
        for task_id in task_ids:
            await client.submit("refine-test", {}, task_id=task_id)
        stack.start(drafter)
        for task_id in task_ids:  # sent back once at least: the loss comes between runs
            for _ in range(600):
                if len(await stack.read(stack.topics.agent("drafter"), task_id)) >= 2:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"{task_id}: the step was never sent back")
        stack.stop(drafter)
        lose_state(private_redis)
    finally:
        stack.start(drafter)
    for task_id in task_ids:
        result = await client.wait_for_result(task_id, timeout_s=120)
        assert result.status == TaskStatus.COMPLETED, f"{task_id}: {result.status} {result.reason}"
        assert len({r.message_id for r in await stack.results_for(task_id)}) == 1
        reports = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
        runs = {r.message_id: r.output["revision"] for r in reports if r.step == "draft"}
        assert sorted(runs.values(), key=str) == [2, 3, None], f"{task_id}: runs {runs}"
        await assert_chain_intact(stack, task_id)


async def test_branches_waiting_to_be_joined_at_the_loss_are_joined_once(
    client: HandrailClient, stack: Stack, private_redis: PrivateRedis
) -> None:
    # The right branches are in, the left ones not yet run, when the state is lost: the rebuilt state has each
    # branch's head and the right branches' outputs (from their audit records), and the join comes once.
    task_ids = [f"joining-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    stack.stop("worker-lefty")
    try:
        for task_id in task_ids:
            await client.submit("section-test", {}, task_id=task_id)
        for task_id in task_ids:
            for _ in range(600):
                steps = [
                    StepCompleted.model_validate_json(v).step for v in await stack.read(stack.topics.steps, task_id)
                ]
                if "checks.right" in steps:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"{task_id}: the right branch was never reported")
        await asyncio.sleep(1.0)  # the validator has taken the right branches in
        lose_state(private_redis)
    finally:
        stack.start("worker-lefty")
    for task_id in task_ids:
        result = await client.wait_for_result(task_id, timeout_s=120)
        assert result.status == TaskStatus.COMPLETED, f"{task_id}: {result.status} {result.reason}"
        assert len({r.message_id for r in await stack.results_for(task_id)}) == 1
        summary = [
            r
            for r in map(StepCompleted.model_validate_json, await stack.read(stack.topics.steps, task_id))
            if r.step == "summary"
        ]
        assert summary and set(summary[0].output["seen"]["steps"]["checks"]) == {"left", "right"}
        await assert_chain_intact(stack, task_id)
