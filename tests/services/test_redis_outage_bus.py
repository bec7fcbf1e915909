"""Redis stopped mid-run: nothing runs unbudgeted, nothing is lost, tasks complete when it returns."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from tests.fixtures.redis_server import PrivateRedis, run_private_redis
from tests.fixtures.stack import Stack, free_port

from handrail.client import HandrailClient
from handrail.messages import TaskStatus

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    yield from run_private_redis(tmp_path_factory, free_port(), persistent=True)


@pytest.fixture(scope="module")
def redis_url(private_redis: PrivateRedis) -> str:
    """This module's stack runs on the private Redis, so stopping it disturbs nobody else."""
    return private_redis.url


def claim(amount: float) -> dict[str, object]:
    return {"employee_id": "E100", "amount": amount, "currency": "USD", "description": "cables"}


async def test_tasks_wait_for_redis_and_complete_when_it_returns(
    client: HandrailClient, stack: Stack, private_redis: PrivateRedis
) -> None:
    before = await client.submit("expense-approval", claim(20), task_id=f"pre-{uuid.uuid4().hex[:8]}")
    assert (await client.wait_for_result(before, timeout_s=60)).status == TaskStatus.COMPLETED

    private_redis.stop()
    try:
        waiting = [
            await client.submit("expense-approval", claim(30 + i), task_id=f"outage-{uuid.uuid4().hex[:8]}")
            for i in range(3)
        ]
        await asyncio.sleep(4)
        for task_id in waiting:
            assert await stack.read(stack.topics.steps, task_id) == [], "a step ran without its budget"
            assert await stack.read(stack.topics.results, task_id) == []
            assert await stack.read(stack.topics.dlq, task_id) == [], "nothing is dead-lettered for an outage"
    finally:
        private_redis.start()

    for task_id in waiting:
        result = await client.wait_for_result(task_id, timeout_s=90)
        assert result.status == TaskStatus.COMPLETED, result.reason
    assert "will retry" in stack.log("router")
