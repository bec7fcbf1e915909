"""Effective autonomy levels on real Redis and Kafka: overrides are audited, cached, and survive a Redis loss."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from handrail.audit import AuditLog, AuditRecord, verify_chain
from handrail.audit.reader import read_key
from handrail.autonomy import (
    AutonomyChanged,
    AutonomyLevels,
    ChangeInProgress,
    Recorder,
    Superseded,
    Unchanged,
    UnknownTarget,
)
from handrail.bus import Publisher, make_reader
from handrail.bus.broker import make_broker
from handrail.contracts import Autonomy, Contracts, load_contracts
from handrail.errors import StateLost
from handrail.messages import ControlRecord, new_message_id, utcnow
from handrail.recovery import Rebuilder, StateKeeper
from handrail.state import generation
from handrail.state.controls import ControlStore
from handrail.tools import default_registry
from handrail.topics import Topics, ensure_topics

CONFIG = Path(__file__).resolve().parents[3] / "config"
CONTRACTS = load_contracts(CONFIG, default_registry().names())
A, W = "expense-approver", "expense-approval"
GATES, EXCEPTIONS, AUDIT = Autonomy.APPROVAL_GATES, Autonomy.EXCEPTION_BASED, Autonomy.AUDIT_BASED


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    redis: aioredis.Redis
    prefix: str
    topics: Topics
    recorder: Recorder
    bootstrap: str

    def levels(self, **options: Any) -> AutonomyLevels:
        return AutonomyLevels(self.redis, self.prefix, CONTRACTS, **options)

    def keeper(self) -> StateKeeper:
        rebuilder = Rebuilder(
            self.redis,
            self.prefix,
            self.topics,
            lambda: make_reader(self.bootstrap, "test-autonomy-rebuild"),
            settle_s=0.0,
            lock_ttl_s=30.0,
        )
        return StateKeeper(self.redis, self.prefix, rebuilder)

    async def wipe(self) -> None:
        """Redis comes back empty (for this prefix: the Redis is shared with other tests)."""
        keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}*")]
        await self.redis.delete(*keys)


@pytest.fixture
async def env(kafka_bootstrap: str, state_redis: aioredis.Redis) -> AsyncIterator[Env]:
    run = uuid.uuid4().hex[:10]
    topics, prefix = Topics(f"t{run}."), f"t{run}:"
    await ensure_topics(kafka_bootstrap, topics.specs(CONTRACTS.agents))
    await generation.stamp(state_redis, prefix)
    broker = make_broker(kafka_bootstrap, client_id="test-autonomy")
    await broker.connect()
    publisher = Publisher(broker)
    recorder = Recorder(publisher, topics.control, AuditLog(state_redis, publisher, topics.audit, prefix))
    try:
        yield Env(state_redis, prefix, topics, recorder, kafka_bootstrap)
    finally:
        await broker.stop()


async def records_of(env: Env, topic: str, key: str) -> list[bytes]:
    return [value for _, _, value in await read_key(env.bootstrap, topic, key)]


def test_an_agent_must_run_a_step_of_the_workflow() -> None:
    only_intake = CONTRACTS.workflows[W].model_copy(update={"steps": CONTRACTS.workflows[W].steps[:1]})
    contracts = Contracts(agents=CONTRACTS.agents, workflows={W: only_intake})
    levels = AutonomyLevels(aioredis.Redis(), "x:", contracts)
    levels.check("expense-intake", W)
    for agent, workflow, message in [
        ("nobody", W, "unknown agent 'nobody'"),
        (A, "payroll", "unknown workflow 'payroll'"),
        (A, W, "agent 'expense-approver' runs no step of workflow 'expense-approval'"),
    ]:
        with pytest.raises(UnknownTarget, match=message):
            levels.check(agent, workflow)


@pytest.mark.bus
async def test_set_is_audited_recorded_and_reversible(env: Env) -> None:
    levels = env.levels()
    assert await levels.level(A, W) == EXCEPTIONS, "the config's level (agents.yaml)"
    assert (await levels.current(A, W)).source == "config"

    up = await levels.set(A, W, AUDIT, by="operator:ana", reason="a clean quarter", recorder=env.recorder)
    assert (up.previous, up.level, up.revision, up.auto) == (EXCEPTIONS, AUDIT, 1, False)
    now = await levels.current(A, W)
    assert (now.level, now.source, now.since) == (AUDIT, "override", up.at)
    assert await levels.level("expense-intake", W) == EXCEPTIONS, "other pairs keep theirs"

    back = await levels.set(A, W, EXCEPTIONS, by="operator:ana", reason="undo", recorder=env.recorder)
    assert (back.previous, back.level, back.revision) == (AUDIT, EXCEPTIONS, 2)
    assert (await levels.current(A, W)).source == "override", "set back, but as an override"
    cleared = await levels.set(A, W, None, by="operator:ana", reason="config again", recorder=env.recorder)
    assert (cleared.level, cleared.revision) == (None, 3)
    assert (await levels.current(A, W)).source == "config"

    # Every change on the audit trail (who, from, to, why), one chain per (agent, workflow), intact.
    raw = await records_of(env, env.topics.audit, up.key)
    audit = [AuditRecord.model_validate_json(value) for value in raw]
    assert [(r.action, r.actor, r.reason) for r in audit] == [
        ("autonomy.changed", "operator:ana", "a clean quarter"),
        ("autonomy.changed", "operator:ana", "undo"),
        ("autonomy.cleared", "operator:ana", "config again"),
    ]
    assert [(r.details["from"], r.details["to"], r.details["source"]) for r in audit] == [
        ("exception-based", "audit-based", "override"),
        ("audit-based", "exception-based", "override"),
        ("exception-based", "exception-based", "config"),
    ]
    assert verify_chain([(i, r) for i, r in enumerate(audit)]).intact
    # And on the control topic, under the key compaction keeps the latest of.
    control = [AutonomyChanged.model_validate_json(v) for v in await records_of(env, env.topics.control, up.key)]
    assert [c.message_id for c in control] == [up.message_id, back.message_id, cleared.message_id]


@pytest.mark.bus
async def test_a_change_that_changes_nothing_or_comes_too_late_is_refused(env: Env) -> None:
    levels = env.levels()
    with pytest.raises(Unchanged, match="is exception-based already"):
        await levels.set(A, W, EXCEPTIONS, by="operator:ana", reason="r", recorder=env.recorder)
    with pytest.raises(Unchanged, match="has no override"):
        await levels.set(A, W, None, by="operator:ana", reason="r", recorder=env.recorder)
    with pytest.raises(Superseded, match="not approval-gates"):
        await levels.set(A, W, AUDIT, by="rule", reason="r", recorder=env.recorder, expected=GATES)
    await env.redis.set(f"{levels.key(A, W)}:lock", "someone else")
    with pytest.raises(ChangeInProgress):
        await levels.set(A, W, AUDIT, by="operator:ana", reason="r", recorder=env.recorder)
    await env.redis.delete(f"{levels.key(A, W)}:lock")
    assert await records_of(env, env.topics.audit, "autonomy/expense-approver/expense-approval") == []


@pytest.mark.bus
async def test_the_level_is_read_once_per_ttl_however_many_steps_ask(env: Env) -> None:
    clock = Clock()
    hot = env.levels(ttl_s=5.0, clock=clock)
    reads = 0
    read = hot._read

    async def counting(**kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)  # a slow Redis: every step asks meanwhile
        return await read(**kwargs)

    hot._read = counting  # type: ignore[assignment]
    assert set(await asyncio.gather(*(hot.level(A, W) for _ in range(200)))) == {EXCEPTIONS}
    assert reads == 1, "concurrent askers share one read"

    # Another process changes it: this one sees it once what it read is older than the ttl.
    await env.levels().set(A, W, GATES, by="operator:ana", reason="incident", recorder=env.recorder)
    clock.now = 4.9
    assert await hot.level(A, W) == EXCEPTIONS and reads == 1
    clock.now = 5.1
    assert await hot.level(A, W) == GATES and reads == 2
    assert await hot.level(A, W) == GATES and reads == 2


@pytest.mark.bus
async def test_an_override_survives_redis_losing_its_state(env: Env) -> None:
    levels = env.levels(ttl_s=0.0)
    change = await levels.set(A, W, AUDIT, by="operator:ana", reason="earned", recorder=env.recorder)
    halt = ControlRecord(
        message_id=new_message_id(),
        kind="halt",
        scope="agent",
        name="expense-intake",
        state="halted",
        reason="r",
        by="operator:ana",
        at=utcnow(),
    )
    await env.recorder.publisher.publish(env.topics.control, halt, key=halt.key)

    await env.wipe()
    with pytest.raises(StateLost):
        await levels.level(A, W)  # fails closed: never the config's level on a forgotten override
    report = await env.keeper().ensure()
    assert report is not None and (report.autonomy, report.halts) == (1, 1), "both kinds of control record"
    assert await levels.level(A, W) == AUDIT
    assert (await levels.current(A, W)).latest == change
    assert await ControlStore(env.redis, env.prefix).halts("t", "expense-intake") is not None

    # The chain goes on where it stopped: reversing it after the rebuild is revision 2, audited as #2.
    back = await levels.set(A, W, None, by="operator:ana", reason="undo", recorder=env.recorder)
    assert back.revision == 2
    audit = [AuditRecord.model_validate_json(v) for v in await records_of(env, env.topics.audit, change.key)]
    assert [r.seq for r in audit] == [1, 2] and verify_chain([(i, r) for i, r in enumerate(audit)]).intact


@pytest.mark.bus
async def test_an_older_change_never_overwrites_a_newer_one(env: Env) -> None:
    levels = env.levels(ttl_s=0.0)
    first = await levels.set(A, W, AUDIT, by="operator:ana", reason="one", recorder=env.recorder)
    second = await levels.set(A, W, GATES, by="operator:ana", reason="two", recorder=env.recorder)
    assert not await levels.absorb(first), "a replayed record"
    assert not await levels.absorb(second), "the same record again"
    assert await levels.level(A, W) == GATES
