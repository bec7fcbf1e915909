"""Poison-proof consumers on real Kafka: any bytes are dead-lettered with a reason and the partition moves on.

Also the one rule for which task a message belongs to (``handrail.bus.identity``):
the body's ``task_id``, the key only when the body names none.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from tests.fixtures.stack import Stack

from handrail.client import HandrailClient
from handrail.messages import TaskStatus

pytestmark = [pytest.mark.bus, pytest.mark.timeout(180)]

DEPTH = 5000  # far past every JSON parser's recursion limit; ~10 KB


def claim(amount: float) -> dict[str, Any]:
    return {"employee_id": "E100", "amount": amount, "currency": "USD", "description": "taxi"}


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def nested(task_id: str) -> bytes:
    return (
        b'{"task_id": "'
        + task_id.encode()
        + b'", "workflow": "expense-approval", "input": '
        + b"[" * DEPTH
        + b"]" * DEPTH
        + b"}"
    )


async def produce_to_partition_of(stack: Stack, topic: str, value: bytes, key: str, same_as: str) -> None:
    """Publish ``value`` keyed ``key`` onto the partition that task ``same_as``'s messages use."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partition = DefaultPartitioner()(same_as.encode(), partitions, partitions)
        await producer.send_and_wait(topic, value, key=key.encode(), partition=partition)
    finally:
        await producer.stop()


@pytest.mark.parametrize("topic_name", ["tasks", "agent.expense-intake", "steps", "agent.expense-approver"])
async def test_json_nested_past_any_parser_limit_is_dead_lettered_and_the_partition_moves_on(
    client: HandrailClient, stack: Stack, topic_name: str
) -> None:
    poison_id, next_id = new_id("nested"), new_id("after-nested")
    topic = stack.topics.prefix + topic_name
    await produce_to_partition_of(stack, topic, nested(poison_id), poison_id, same_as=next_id)
    await client.submit("expense-approval", claim(10), task_id=next_id)
    assert (await client.wait_for_result(next_id, timeout_s=60)).status == TaskStatus.COMPLETED
    letters = [d for d in await stack.dead_letters_for(poison_id) if d.source_topic == topic]
    assert len(letters) == 1 and letters[0].error_type == "malformed_message"
    assert "not valid JSON" in letters[0].reason or "recursion" in letters[0].reason
    assert base64.b64decode(letters[0].original) == nested(poison_id)


@pytest.mark.parametrize(
    ("label", "body", "error_type"),
    [
        (
            "nan",
            lambda t: (
                b'{"task_id":"%s","workflow":"expense-approval","input":{"employee_id":"E1","amount":1,'
                b'"currency":"USD","description":"x"},"metadata":{"x":NaN}}' % t.encode()
            ),
            "malformed_message",
        ),
        ("bad-utf8", lambda t: b'{"task_id":"%s","workflow":"expense-\xff\xfe"}' % t.encode(), "malformed_message"),
        (
            "huge-int",
            lambda t: json.dumps(
                {"task_id": t, "workflow": "expense-approval", "input": claim(1), "metadata": {"n": 10**400}}
            ).encode(),
            "invalid_number",
        ),
    ],
)
async def test_values_that_cannot_be_hashed_or_decoded_are_rejected_with_a_reason(
    client: HandrailClient, stack: Stack, label: str, body: Any, error_type: str
) -> None:
    task_id = new_id(label)
    await client.publish_raw(body(task_id), key=task_id)
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert (result.status, result.error_type) == (TaskStatus.REJECTED, error_type)
    [letter] = await stack.dead_letters_for(task_id)
    assert letter.error_type == error_type and letter.reason == result.reason


async def test_a_key_naming_another_task_is_refused_under_the_bodys_task_id(
    client: HandrailClient, stack: Stack
) -> None:
    body_id, key = new_id("body"), new_id("key")
    raw = json.dumps({"task_id": body_id, "workflow": "expense-approval", "input": claim(10)}).encode()
    await client.publish_raw(raw, key=key)
    result = await client.wait_for_result(body_id, timeout_s=60)
    assert (result.status, result.error_type) == (TaskStatus.REJECTED, "task_id_mismatch")
    [letter] = await stack.dead_letters_for(body_id)
    assert letter.error_type == "task_id_mismatch" and key in letter.reason
    assert await stack.results_for(key) == [] and await stack.dead_letters_for(key) == []


async def test_garbage_whose_body_names_a_task_is_dead_lettered_and_ended_under_that_task(
    client: HandrailClient, stack: Stack
) -> None:
    body_id, key = new_id("garbage-body"), new_id("garbage-key")
    await client.publish_raw(json.dumps({"task_id": body_id, "workflow": 7}).encode(), key=key)
    result = await client.wait_for_result(body_id, timeout_s=60)
    assert result.status == TaskStatus.REJECTED
    assert [d.error_type for d in await stack.dead_letters_for(body_id)] == ["malformed_message"]
    assert await stack.results_for(key) == [] and await stack.dead_letters_for(key) == []


async def test_a_body_too_large_for_a_dead_letter_keeps_its_prefix_size_and_digest(
    client: HandrailClient, stack: Stack
) -> None:
    task_id = new_id("huge")
    raw = json.dumps(
        {"task_id": task_id, "workflow": "expense-approval", "input": claim(1), "metadata": {"pad": "x" * 900_000}}
    ).encode()
    await client.publish_raw(raw, key=task_id)
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert (result.status, result.error_type) == (TaskStatus.REJECTED, "task_too_large")
    [letter] = await stack.dead_letters_for(task_id)
    kept = base64.b64decode(letter.original)
    assert letter.original_truncated and 0 < len(kept) < len(raw) and raw.startswith(kept)
    assert letter.original_size == len(raw) and letter.original_sha256 == hashlib.sha256(raw).hexdigest()
