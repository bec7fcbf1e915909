"""``handrail dlq list|show`` on real Kafka: the whole topic counted, ids by unique prefix."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from tests.fixtures.cli import handrail

from handrail.bus.broker import make_producer
from handrail.messages import DeadLetter, utcnow
from handrail.topics import Topics, TopicSpec, ensure_topics

PROJECT_ROOT = Path(__file__).resolve().parents[3]
#: More than `dlq list` shows by default (50), spread over partitions.
LETTERS = 60


def letter(message_id: str, index: int) -> DeadLetter:
    return DeadLetter(
        message_id=message_id,
        reason=f"dead letter number {index}: " + "the reason runs on and on, " * 6 + "and ends here",
        error_type="unknown_workflow",
        source_topic="handrail.tasks",
        partition=0,
        offset=index,
        original=base64.b64encode(b'{"workflow": "payroll"}').decode(),
        task_id=f"task-{index}",
        service="router",
        dead_lettered_at=utcnow() - timedelta(seconds=LETTERS - index),
    )


@pytest.fixture
async def dlq(kafka_bootstrap: str) -> tuple[dict[str, str], list[DeadLetter]]:
    """A fresh dead-letter topic of 3 partitions with LETTERS dead letters and one record that is not one."""
    topics = Topics(f"dlq{uuid.uuid4().hex[:8]}.")
    await ensure_topics(kafka_bootstrap, [TopicSpec(topics.dlq, partitions=3)])
    # Two ids that share a start, so a short prefix of them is ambiguous.
    ids = ["abcd1111-" + uuid.uuid4().hex, "abcd2222-" + uuid.uuid4().hex]
    ids += [str(uuid.uuid4()) for _ in range(LETTERS - 2)]
    letters = [letter(message_id, index) for index, message_id in enumerate(ids)]
    producer = make_producer(kafka_bootstrap, "test-dlq")
    await producer.start()
    try:
        for one in letters:
            await producer.send_and_wait(topics.dlq, one.to_bytes(), key=(one.task_id or "").encode())
        await producer.send_and_wait(topics.dlq, b"not a dead letter", key=b"stranger")
    finally:
        await producer.stop()
    return {"HANDRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "HANDRAIL_TOPIC_PREFIX": topics.prefix}, letters


@pytest.mark.bus
def test_dlq_list_reports_the_total_beyond_the_limit(dlq: tuple[dict[str, str], list[DeadLetter]]) -> None:
    env, letters = dlq
    listed = handrail("dlq", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"showing the newest 50 of {LETTERS} in the last 86400s; 1 unreadable record skipped" in listed.stdout
    newest = letters[-1]
    assert newest.message_id in listed.stdout and newest.reason in listed.stdout, "whole values in a pipe"
    assert letters[0].message_id not in listed.stdout, "the oldest are beyond the limit"

    everything = handrail("dlq", "list", "--limit", "100", env=env)
    assert f"{LETTERS} dead letters in the last 86400s" in everything.stdout

    as_json = handrail("dlq", "list", "--json", "--limit", "5", env=env)
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["message_id"] for r in rows] == [x.message_id for x in letters[-5:]], "the newest, oldest first"
    assert f"showing the newest 5 of {LETTERS}" in as_json.stderr, "the count is for people: on stderr"


@pytest.mark.bus
def test_dlq_show_takes_a_unique_prefix(dlq: tuple[dict[str, str], list[DeadLetter]]) -> None:
    env, letters = dlq
    first = letters[0]
    shown = handrail("dlq", "show", first.message_id[:6] + "1", env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"message_id:          {first.message_id}" in shown.stdout
    assert '{"workflow": "payroll"}' in shown.stdout, "the original, decoded"
    as_json = handrail("dlq", "show", first.message_id, "--json", env=env)
    assert json.loads(as_json.stdout)["reason"] == first.reason

    ambiguous = handrail("dlq", "show", "abcd", env=env)
    assert ambiguous.returncode == 2
    assert "'abcd' is the start of 2 ids" in ambiguous.stderr
    assert letters[0].message_id in ambiguous.stderr and letters[1].message_id in ambiguous.stderr

    unknown = handrail("dlq", "show", "zzzz", env=env)
    assert unknown.returncode == 2 and "no dead letter of the last 86400s starts with 'zzzz'" in unknown.stderr
