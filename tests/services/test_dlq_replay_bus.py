"""``handrail dlq replay`` on the real bus: a replayed dead letter runs its task to one result, however often.

The CLI runs as a user runs it (its own process); router, validator and workers are the stack's.
A transient failure is a handoff its worker gave up on as ``poison``: the dead letter is written
by the worker pipeline's own ``dead_letter``, and the handoff is taken off the agent's topic (its
group committed past it), which is where a poison message leaves its task: open, with no result.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from tests.fixtures.cli import handrail
from tests.fixtures.stack import Stack

from handrail.audit import AuditRecord
from handrail.bus.broker import make_broker
from handrail.bus.delivery import Delivery
from handrail.bus.pipeline import Pipeline
from handrail.bus.publisher import Publisher
from handrail.client import HandrailClient, follow, open_reader
from handrail.messages import DeadLetter, TaskStatus, utcnow
from handrail.signing import OPERATOR
from handrail.state import TaskStore
from handrail.state.client import connect_redis
from handrail_cli.dlq_replay import REPLAY_OF_HEADER, REPLAYED
from handrail_dev import signing_keys

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

INTAKE = "expense-intake"
WORKER = f"worker-{INTAKE}"
WHY = "the tool outage is over (INC-4711)"


def claim(amount: float) -> dict[str, Any]:
    return {"employee_id": "E100", "amount": amount, "currency": "USD", "description": "taxi"}


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def cli_env(stack: Stack) -> dict[str, str]:
    return {
        "HANDRAIL_KAFKA_BOOTSTRAP": stack.bootstrap,
        "HANDRAIL_TOPIC_PREFIX": stack.topics.prefix,
        "HANDRAIL_REDIS_URL": stack.redis_url,
        "HANDRAIL_REDIS_PREFIX": stack.env["HANDRAIL_REDIS_PREFIX"],
        "HANDRAIL_SIGNING_KEY_FILE": str(stack.run_dir / signing_keys.FOLDER / f"{OPERATOR}.pem"),
    }


async def replay(stack: Stack, *args: str) -> Any:
    """``handrail dlq replay ARGS`` in its own process (off the event loop: the client follows results on it)."""
    return await asyncio.to_thread(handrail, "dlq", "replay", *args, env=cli_env(stack))


async def records_on(stack: Stack, topic: str, key: str) -> list[ConsumerRecord[bytes, bytes]]:
    reader = await open_reader(stack.bootstrap, [topic], from_time_ms=0)
    try:
        return [r async for r in follow(reader, idle_timeout_s=1.0) if r.key == key.encode()]
    finally:
        await reader.stop()


async def audit_of(stack: Stack, task_id: str) -> list[AuditRecord]:
    return [AuditRecord.model_validate_json(v) for v in await stack.read(stack.topics.audit, task_id)]


async def dead_letters(stack: Stack, task_id: str, count: int) -> list[DeadLetter]:
    """The task's dead letters, once there are at least ``count`` (within 60 s)."""
    for _ in range(60):
        letters = await stack.dead_letters_for(task_id)
        if len(letters) >= count:
            return letters
        await asyncio.sleep(0.5)
    raise AssertionError(f"fewer than {count} dead letters for {task_id}: {letters}")


async def poisoned_handoff(stack: Stack, client: HandrailClient) -> tuple[str, DeadLetter]:
    """A task whose first handoff its worker dead-lettered as poison (the worker is stopped: the caller starts it)."""
    stack.stop(WORKER)
    task_id = await client.submit("expense-approval", claim(10), task_id=new_id("poisoned"))
    topic = stack.topics.agent(INTAKE)
    for _ in range(60):
        found = await records_on(stack, topic, task_id)
        if found:
            break
    [record] = found
    await stack.skip_pending(stack.group(f"agent-{INTAKE}"), topic)
    broker = make_broker(stack.bootstrap, client_id="test-dlq-replay")
    await broker.connect()
    try:
        redis = connect_redis(stack.redis_url)
        pipeline = Pipeline(
            service=WORKER,
            publisher=Publisher(broker),
            store=TaskStore(redis, stack.env["HANDRAIL_REDIS_PREFIX"]),
            dlq_topic=stack.topics.dlq,
        )
        reason = f"{WORKER} failed on this message 5 times in a row; last error: ToolError: ledger unreachable"
        await pipeline.dead_letter(
            Delivery.from_record(record), reason, "poison", task_id, role="dead-letter/poison", audited=False
        )
        await redis.aclose()
    finally:
        await broker.stop()
    [letter] = await dead_letters(stack, task_id, 1)
    return task_id, letter


async def test_a_poisoned_handoff_replayed_completes_its_task_once_and_a_second_replay_does_nothing(
    client: HandrailClient, stack: Stack
) -> None:
    try:
        task_id, letter = await poisoned_handoff(stack, client)
    finally:
        stack.start(WORKER)
    assert await stack.results_for(task_id, settle_s=2) == [], "a poisoned handoff leaves its task without a result"

    first = await replay(stack, letter.message_id[:13], "--reason", WHY)
    assert first.returncode == 0, first.stderr
    assert f"replayed     {letter.message_id}  task {task_id}  poison -> {stack.topics.agent(INTAKE)}" in first.stdout
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED

    second = await replay(stack, letter.message_id, "--reason", WHY, "--json")
    assert second.returncode == 0, second.stderr
    [row] = [json.loads(line) for line in second.stdout.splitlines()]
    assert row["outcome"] == "skipped" and f"task {task_id} already ended completed" in row["why"]
    assert "1 skipped" in second.stderr
    assert len(await stack.results_for(task_id, settle_s=3)) == 1

    sent = await records_on(stack, stack.topics.agent(INTAKE), task_id)
    replays = [r for r in sent if dict(r.headers).get(REPLAY_OF_HEADER) == letter.message_id.encode()]
    assert len(replays) == 1, "the second replay sent nothing"
    assert replays[0].value == base64.b64decode(letter.original), "the original bytes, unchanged"
    [audited] = [r for r in await audit_of(stack, task_id) if r.action == REPLAYED]
    assert audited.actor.startswith("operator:") and audited.reason == WHY
    assert audited.details["dead_letter_id"] == letter.message_id
    assert (audited.signature or "").startswith(f"v1:{OPERATOR}:"), "signed with the operator's key"


async def test_replaying_twice_before_the_task_moves_on_still_ends_it_with_one_result(
    client: HandrailClient, stack: Stack
) -> None:
    # As a replay cut short after sending and run again: both go out, the worker takes the handoff once.
    try:
        task_id, letter = await poisoned_handoff(stack, client)
        for _ in range(2):
            sent = await replay(stack, letter.message_id, "--reason", WHY)
            assert sent.returncode == 0 and "1 replayed" in sent.stdout, sent.stdout + sent.stderr
    finally:
        stack.start(WORKER)
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED
    assert len(await stack.results_for(task_id, settle_s=3)) == 1
    audit = await audit_of(stack, task_id)
    assert [r.action for r in audit].count(REPLAYED) == 2, "each run is recorded, with who and why"
    intake = [r for r in audit if r.action == "step.completed" and r.step == "intake"]
    assert len(intake) == 1, "the replayed handoff's step ran once"


async def test_a_replay_of_a_still_malformed_message_is_dead_lettered_again_with_the_same_reason(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = new_id("garbage")
    topic = stack.topics.agent(INTAKE)
    await stack.produce(topic, b"{not a handoff", key=task_id)
    [letter] = await dead_letters(stack, task_id, 1)
    assert letter.error_type == "malformed_message"

    dry = await replay(stack, letter.message_id, "--reason", WHY, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    [row] = [json.loads(line) for line in dry.stdout.splitlines()]
    assert (row["outcome"], row["topic"], row["key"], row["size"]) == ("would_replay", topic, task_id, 14)
    replayed = await replay(stack, letter.message_id, "--reason", WHY)
    assert replayed.returncode == 0, replayed.stderr

    old, new = await dead_letters(stack, task_id, 2)
    assert old.message_id == letter.message_id
    assert (new.reason, new.error_type, new.source_topic, new.original) == (
        old.reason, old.error_type, old.source_topic, old.original
    )  # fmt: skip
    assert new.offset != old.offset
    assert await stack.results_for(task_id, settle_s=2) == []
    assert len(await records_on(stack, topic, task_id)) == 2, "the dry run sent nothing"
    # Workers write no audit trail (their Kafka ACLs): the replay is the whole record there.
    assert [r.action for r in await audit_of(stack, task_id)] == [REPLAYED]

    # Both dead letters are the same message: a replay of the two sends it once.
    again = await replay(stack, "--task", task_id, "--reason", WHY, "--json")
    rows = {r["dead_letter_id"]: r for r in map(json.loads, again.stdout.splitlines())}
    assert rows[old.message_id]["outcome"] == "replayed"
    assert rows[new.message_id]["outcome"] == "skipped" and old.message_id in rows[new.message_id]["why"]


async def test_a_rejected_task_is_not_run_by_a_replay(client: HandrailClient, stack: Stack) -> None:
    task_id = new_id("rejected")
    await client.publish_raw(json.dumps({"task_id": task_id, "workflow": 7}).encode(), key=task_id)
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.REJECTED
    await dead_letters(stack, task_id, 1)
    skipped = await replay(stack, "--task", task_id, "--source-topic", "tasks", "--reason", WHY)
    assert skipped.returncode == 0, skipped.stderr
    assert f"task {task_id} already ended rejected" in skipped.stdout
    assert len(await stack.results_for(task_id, settle_s=2)) == 1
    assert len(await records_on(stack, stack.topics.tasks, task_id)) == 1


def fabricated(task_id: str | None, amount: float = 1, **fields: Any) -> DeadLetter:
    original = json.dumps({"task_id": task_id, "workflow": "expense-approval", "input": claim(amount)}).encode()
    return DeadLetter(
        message_id=str(uuid.uuid4()),
        reason="written by the test",
        error_type="internal_error",
        source_topic=fields.pop("source_topic", "tasks"),
        partition=0,
        offset=0,
        original=base64.b64encode(original).decode(),
        task_id=task_id,
        service="router",
        dead_lettered_at=fields.pop("dead_lettered_at", utcnow()),
        **fields,
    )


async def test_filters_pick_and_what_cannot_be_replayed_is_refused_saying_why(stack: Stack) -> None:
    task_id = new_id("refused")
    prefix = stack.topics.prefix
    cut = fabricated(task_id, source_topic=f"{prefix}tasks", original_truncated=True, original_size=900_000)
    events = fabricated(task_id, source_topic=f"{prefix}events")
    foreign = fabricated(task_id, source_topic="other.tasks")
    stale = fabricated(task_id, source_topic=f"{prefix}tasks", dead_lettered_at=utcnow() - timedelta(days=6, hours=1))
    nameless = fabricated(None, source_topic=f"{prefix}tasks")
    for one in (cut, events, foreign, stale, nameless):
        await stack.produce(stack.topics.dlq, one.to_bytes(), key=task_id)

    refused = await replay(stack, "--task", task_id, "--reason", WHY, "--json")
    assert refused.returncode == 1, "a refusal is a failure a script can see"
    rows = {r["dead_letter_id"]: r for r in map(json.loads, refused.stdout.splitlines())}
    assert set(rows) == {cut.message_id, events.message_id, foreign.message_id, stale.message_id}
    assert rows[cut.message_id]["outcome"] == "refused" and "cannot be replayed" in rows[cut.message_id]["why"]
    assert "original_truncated" in rows[cut.message_id]["why"]
    assert rows[events.message_id]["outcome"] == "refused" and "time windows" in rows[events.message_id]["why"]
    assert "not a topic of this deployment" in rows[foreign.message_id]["why"]
    assert rows[stale.message_id]["outcome"] == "refused" and "run it twice" in rows[stale.message_id]["why"]

    by_topic = await replay(stack, "--task", task_id, "--source-topic", "events", "--reason", WHY, "--json")
    assert [json.loads(x)["dead_letter_id"] for x in by_topic.stdout.splitlines()] == [events.message_id]
    recent = await replay(stack, "--task", task_id, "--since", "1h", "--reason", WHY, "--json")
    assert stale.message_id not in recent.stdout and cut.message_id in recent.stdout
    older = await replay(stack, "--task", task_id, "--until", "6d", "--reason", WHY, "--json")
    assert [json.loads(x)["dead_letter_id"] for x in older.stdout.splitlines()] == [stale.message_id]

    nameless_only = await replay(stack, nameless.message_id, "--reason", WHY)
    assert nameless_only.returncode == 1 and "names no task" in nameless_only.stdout
    assert await stack.read(stack.topics.tasks, task_id) == [], "nothing was sent"

    waiting = new_id("limited")
    for amount in (1, 2, 3):
        await stack.produce(
            stack.topics.dlq, fabricated(waiting, amount, source_topic=f"{prefix}tasks").to_bytes(), waiting
        )
    limited = await replay(stack, "--task", waiting, "--limit", "2", "--dry-run", "--reason", WHY)
    assert limited.returncode == 0, limited.stderr
    assert "2 would replay; 1 more to send beyond --limit 2" in limited.stdout
    assert await stack.read(stack.topics.tasks, waiting) == [], "a dry run sends nothing"
    assert [r for r in await audit_of(stack, waiting) if r.action == REPLAYED] == [], "and records nothing"

    unknown = await replay(stack, "ffffffff-not-an-id", "--reason", WHY)
    assert unknown.returncode == 2 and "no dead letter starts with 'ffffffff-not-an-id'" in unknown.stderr
