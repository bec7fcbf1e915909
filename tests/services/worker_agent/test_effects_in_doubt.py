"""A side effect whose outcome is in doubt is resolved by asking its target, never silently repeated.

Real Redis (the effect records) and the demo's real ledger file (the target, deduping on the key).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import redis.asyncio as aioredis
from tests.services.worker_agent.test_runner import CONFIG, OpenGuard

from handrail.contracts import load_contracts
from handrail.hashing import canonical_json, context_hash, sha256_hex
from handrail.llm import ScriptedProvider
from handrail.messages import HandoffEnvelope
from handrail.state import connect_redis, generation
from handrail.state.effects import Claim, EffectStore
from handrail.tools import default_registry
from handrail_worker.runner import StepRunner

INTAKE = {
    "employee": {"employee_id": "E100", "active": True, "department": "engineering", "name": "Ada"},
    "amount_usd": 42.0,
}


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """Redis as the services connect to it (strings, not bytes)."""
    client = connect_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _envelope(task_id: str) -> HandoffEnvelope:
    context = {"input": {}, "steps": {"intake": INTAKE}}
    return HandoffEnvelope(
        message_id=f"m-{uuid.uuid4().hex}",
        task_id=task_id,
        workflow="expense-approval",
        step="decide",
        step_index=1,
        sender="validator",
        receiver="expense-approver",
        goal="g",
        context=context,
        context_hash=context_hash(context),
        parent_hash="0" * 64,
        idempotency_key="k",
    )


def _ledger_key(task_id: str) -> str:
    """The idempotency key the runner derives for the approver's record_decision call."""
    args = {"employee_id": "E100", "amount_usd": 42.0, "decision": "approved"}
    return sha256_hex(canonical_json([task_id, "decide", "record_decision", args]))


async def _run_once(redis_client: aioredis.Redis, data_dir: Path, prefix: str, task_id: str) -> None:
    tools = default_registry(data_dir)
    agent = load_contracts(CONFIG, tools.names()).agent("expense-approver")
    runner = StepRunner(agent, ScriptedProvider(agent.plan), tools, EffectStore(redis_client, prefix))
    await runner.run(_envelope(task_id), OpenGuard())


def _entries(data_dir: Path) -> list[dict[str, object]]:
    ledger = data_dir / "expense-ledger.jsonl"
    return [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []


async def test_an_effect_that_reached_its_target_before_the_crash_is_not_repeated(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    prefix, task_id = f"t{uuid.uuid4().hex[:8]}:", f"doubt-{uuid.uuid4().hex[:8]}"
    await generation.stamp(redis_client, prefix)  # a namespace of its own, empty on purpose
    await _run_once(redis_client, tmp_path, prefix, task_id)
    assert len(_entries(tmp_path)) == 1
    # As if the worker died after the ledger write and before recording it: the claim is left open.
    store = EffectStore(redis_client, prefix)
    await store.release(task_id, _ledger_key(task_id))
    assert (await store.claim(task_id, _ledger_key(task_id), "the-dead-attempt")).claim == Claim.RUN

    await _run_once(redis_client, tmp_path, prefix, task_id)  # the redelivery finds the claim in doubt
    entries = _entries(tmp_path)
    assert len(entries) == 1 and entries[0]["idempotency_key"] == _ledger_key(task_id)


async def test_an_effect_that_never_reached_its_target_runs_exactly_once(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    prefix, task_id = f"t{uuid.uuid4().hex[:8]}:", f"doubt-{uuid.uuid4().hex[:8]}"
    await generation.stamp(redis_client, prefix)  # a namespace of its own, empty on purpose
    # As if the worker died after claiming and before the ledger write.
    await EffectStore(redis_client, prefix).claim(task_id, _ledger_key(task_id), "the-dead-attempt")
    await _run_once(redis_client, tmp_path, prefix, task_id)
    await _run_once(redis_client, tmp_path, prefix, task_id)
    assert [e["idempotency_key"] for e in _entries(tmp_path)] == [_ledger_key(task_id)]


async def test_the_ledger_keeps_one_entry_per_idempotency_key(tmp_path: Path) -> None:
    from handrail.tools import ToolContext

    tool = default_registry(tmp_path).get("record_decision")
    assert tool is not None and tool.lookup is not None
    ctx = ToolContext(task_id="t", step="decide", idempotency_key="key-1")
    args = {"employee_id": "E1", "amount_usd": 1.0, "decision": "approved"}
    assert await tool.lookup(ctx) is None
    first, again = await tool.run(args, ctx), await tool.run(args, ctx)
    assert first["recorded"] and again["duplicate"]
    assert await tool.lookup(ctx) is not None and len(_entries(tmp_path)) == 1
