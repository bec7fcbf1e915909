"""A worker frozen past its session timeout wakes up after its partitions moved: it publishes nothing.

Two replicas of the intake agent share its partitions, every model call takes
``LATENCY_MS`` (the demo's plans replayed over the OpenAI-compatible API). One
replica is stopped with SIGSTOP while it holds calls in flight; the group gives its
partitions to the other, which runs those steps again and the tasks end. Then the
frozen one gets SIGCONT, with its model answers waiting in its sockets: it must
drop those steps (fenced) rather than publish a second output for any of them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from bench import model_replay
from tests.fixtures.model_server import FakeModelServer
from tests.fixtures.stack import PROJECT_ROOT, Stack, free_port

from handrail.audit import AuditRecord, verify_chain
from handrail.client import HandrailClient
from handrail.messages import StepCompleted, TaskStatus
from handrail_dev import services

pytestmark = [pytest.mark.bus, pytest.mark.timeout(300)]

LATENCY_MS = 2000
AGENT = "expense-intake"
FROZEN = f"worker-{AGENT}"
REPLICA = f"{FROZEN}-2"
TASKS = 12


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeModelServer]:
    server = model_replay.start_server(PROJECT_ROOT / "config", LATENCY_MS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory, model_server: FakeModelServer) -> Path:
    return model_replay.write_config(
        PROJECT_ROOT / "config", tmp_path_factory.mktemp("zombie") / "config", model_server.url
    )


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {model_replay.KEY_ENV: "zombie"}


def claim(amount: float) -> dict[str, object]:
    return {"employee_id": "E100", "amount": amount, "currency": "USD", "description": "cables"}


async def steps_with_times(stack: Stack) -> list[tuple[int, StepCompleted]]:
    """Every ``StepCompleted`` on the steps topic with its record timestamp (ms)."""
    reader = AIOKafkaConsumer(stack.topics.steps, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest")
    await reader.start()
    found: list[tuple[int, StepCompleted]] = []
    try:
        while batch := await reader.getmany(timeout_ms=2000):
            for records in batch.values():
                found += [(r.timestamp, StepCompleted.model_validate_json(r.value or b"")) for r in records]
    finally:
        await reader.stop()
    return found


async def test_a_worker_woken_after_its_partitions_moved_publishes_nothing(
    client: HandrailClient, stack: Stack, model_server: FakeModelServer
) -> None:
    original = stack.processes[FROZEN]
    stack.processes[REPLICA] = services.ServiceProcess(REPLICA, original.argv, free_port(), original.env)
    stack.start(REPLICA)
    try:
        await asyncio.sleep(5)  # both replicas in the group, the partitions shared out
        task_ids = [f"zombie-{i}-{uuid.uuid4().hex[:6]}" for i in range(TASKS)]
        for n, task_id in enumerate(task_ids):
            await client.submit("expense-approval", claim(20 + n), task_id=task_id)
        for _ in range(100):  # until both replicas wait on the model
            if model_server.in_flight >= 4:
                break
            await asyncio.sleep(0.05)
        frozen_pid = stack.pid(FROZEN)
        os.kill(frozen_pid, signal.SIGSTOP)
        try:
            # Past the session timeout the group moves the frozen one's partitions to the replica, which
            # runs their steps again: every task ends while the frozen one still sleeps.
            results = {t: await client.wait_for_result(t, timeout_s=120) for t in task_ids}
        finally:
            woke_ms = int(time.time() * 1000)
            os.kill(frozen_pid, signal.SIGCONT)
        assert {r.status for r in results.values()} == {TaskStatus.COMPLETED}
        await asyncio.sleep(8)  # the woken one's model answers are in; whatever it would publish, it has

        log = stack.log(FROZEN)
        assert "moved to another consumer" in log, "the frozen worker held no step at all: the test proves nothing"
        late = [s for ts, s in await steps_with_times(stack) if ts >= woke_ms and s.task_id in results]
        assert late == [], f"the woken worker published {[(s.task_id, s.step, s.status) for s in late]}"
        for task_id in task_ids:
            assert [r.message_id for r in await stack.results_for(task_id)] == [results[task_id].message_id]
            chain = [AuditRecord.model_validate_json(v) for v in await stack.read(stack.topics.audit, task_id)]
            report = verify_chain([(None, r) for r in chain])
            assert report.intact, f"audit chain of {task_id}: {report.describe()}"
    finally:
        stack.stop(REPLICA)
        del stack.processes[REPLICA]
