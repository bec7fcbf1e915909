"""Accepting a hop and auditing it in one script, on real Redis: the record follows the acceptance exactly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from tests.fixtures.publishing import CapturingPublisher

from handrail.audit import AuditLog, verify_chain
from handrail.audit.acceptance import HopAcceptance
from handrail.errors import StateLost
from handrail.state import Acceptance, TaskStore, connect_redis, generation
from handrail.state.tasks import Via

pytestmark = pytest.mark.bus

H0, H1, H2 = "sha256:" + "0" * 64, "sha256:" + "1" * 64, "sha256:" + "2" * 64


@dataclass
class Env:
    redis: aioredis.Redis
    prefix: str
    store: TaskStore
    log: AuditLog
    sink: CapturingPublisher
    acceptance: HopAcceptance

    def record(self, message_id: str) -> dict[str, Any]:
        return {"dedupe_key": message_id, "actor": "agent:a", "action": "handoff.accepted", "step": "s"}

    async def accept(self, task_id: str, message_id: str, parent: str, context: str, via: Via | None = None) -> Any:
        return await self.acceptance.accept(
            task_id, message_id, parent, context, "worker", "s", self.record(message_id), via
        )

    async def rebuilt(self, task_id: str, head: str) -> None:
        """The task as ``handrail.recovery`` puts it back: its head is the last recorded hash."""
        pipe = self.redis.pipeline(transaction=True)
        fields = {"submission": "sub", "workflow": "w", "status": "running", "head": head, "rebuilt": "1"}
        self.store.restore(pipe, task_id, fields, set())
        await pipe.execute()


@pytest.fixture
async def env(redis_url: str) -> AsyncIterator[Env]:
    redis = connect_redis(redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await generation.stamp(redis, prefix)
    sink = CapturingPublisher()
    store = TaskStore(redis, prefix)
    log = AuditLog(redis, sink, "audit", prefix=prefix)  # type: ignore[arg-type]
    yield Env(redis, prefix, store, log, sink, HopAcceptance(redis, prefix, store, log))
    await redis.aclose()


async def test_an_accepted_hop_is_audited_and_a_redelivery_gets_the_same_record(env: Env) -> None:
    await env.store.open("t1", "w", "sub", H0, "now")
    await env.log.record("t1", dedupe_key="sub", actor="service:router", action="task.opened")
    first = await env.accept("t1", "m1", H0, H1)
    assert first.result.outcome == Acceptance.ACCEPTED
    assert first.record is not None and first.record.seq == 2
    again = await env.accept("t1", "m1", H0, H1)  # the process died before it finished: resumed
    assert again.result.outcome == Acceptance.RESUMED and again.record == first.record
    await env.store.mark_done("t1", "worker", "m1")
    done = await env.accept("t1", "m1", H0, H1)
    assert done.result.outcome == Acceptance.DUPLICATE and done.record is None
    assert [r.seq for r in env.sink.records] == [1, 2, 2], "the resumed hop republishes its record, no new one"
    assert verify_chain([(None, r) for r in env.sink.records]).intact


async def test_a_hop_that_is_not_taken_on_appends_nothing(env: Env) -> None:
    await env.store.open("t2", "w", "sub", H0, "now")
    refused = await env.accept("t2", "m1", H2, H1)  # not the committed head
    assert refused.result.outcome == Acceptance.PARENT_MISMATCH and refused.result.detail == H0
    unknown = await env.accept("nobody", "m1", H0, H1)
    assert unknown.result.outcome == Acceptance.UNKNOWN_TASK
    assert env.sink.records == []
    assert await env.redis.hgetall(f"{env.prefix}{{t2}}:audit") == {}


async def test_a_wrong_guess_of_the_chain_head_is_sealed_again_on_the_real_one(env: Env) -> None:
    await env.store.open("t3", "w", "sub", H0, "now")
    other = AuditLog(env.redis, env.sink, "audit", prefix=env.prefix)  # type: ignore[arg-type]
    for i in range(3):  # another service wrote the chain: this log knows no head and guesses the genesis
        await other.record("t3", dedupe_key=f"x{i}", actor="service:other", action="noted")
    taken = await env.accept("t3", "m1", H0, H1)
    assert taken.record is not None and taken.record.seq == 4
    assert verify_chain([(None, r) for r in env.sink.records]).intact
    assert env.log.head_of("t3") == f"{taken.record.record_hash}:4"


async def test_a_redis_that_lost_its_state_accepts_nothing(env: Env) -> None:
    await env.store.open("t4", "w", "sub", H0, "now")
    await env.redis.delete(generation.marker_key(env.prefix))
    with pytest.raises(StateLost):
        await env.accept("t4", "m1", H0, H1)
    assert env.sink.records == []


async def test_after_a_rebuild_a_step_chains_on_from_the_head_its_handoff_left(env: Env) -> None:
    # Before the loss the agent took handoff h1 (H0 -> H1) on; nobody recorded that, so the rebuilt
    # head is H0, and the agent's step on h1 (parent H1) arrives at the validator.
    await env.rebuilt("t5", H0)
    stepped = await env.accept("t5", "s1", H1, H2, via=Via("h1", H0))
    assert stepped.result.outcome == Acceptance.ACCEPTED
    assert (await env.store.get("t5"))["head"] == H2
    # the handoff is now known as taken on: its redelivery resumes instead of forking the chain
    again = await env.acceptance.accept("t5", "h1", H0, H1, "worker", "s", env.record("h1"))
    assert again.result.outcome == Acceptance.RESUMED


async def test_the_handoff_a_step_names_is_no_way_around_the_head(env: Env) -> None:
    await env.store.open("t6", "w", "sub", H0, "now")  # a live task, never rebuilt
    live = await env.accept("t6", "s1", H1, H2, via=Via("h1", H0))
    assert live.result.outcome == Acceptance.PARENT_MISMATCH
    await env.rebuilt("t7", H0)
    elsewhere = await env.accept("t7", "s1", H1, H2, via=Via("h1", H2))  # that handoff left another head
    assert elsewhere.result.outcome == Acceptance.PARENT_MISMATCH
    assert (await env.accept("t7", "h1", H0, H1)).result.outcome == Acceptance.ACCEPTED
    taken = await env.accept("t7", "s2", H2, H1, via=Via("h1", H0))  # h1 was taken on, to H1: not this step's
    assert taken.result.outcome == Acceptance.PARENT_MISMATCH and taken.result.detail == H1
    assert len(env.sink.records) == 1, "only the handoff taken on was recorded"
