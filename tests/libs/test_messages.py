"""Payload models: strictness and stable derived ids."""

from __future__ import annotations

import random
import uuid

import pytest

from handrail.bus.pipeline import decode
from handrail.errors import MalformedMessage
from handrail.messages import TaskSubmitted, derived_message_id


def test_derived_ids_are_stable_and_distinct_per_role() -> None:
    assert derived_message_id("m1", "result") == derived_message_id("m1", "result")
    assert derived_message_id("m1", "result") != derived_message_id("m1", "handoff")
    assert derived_message_id("m1", "result") != derived_message_id("m2", "result")


def test_derived_ids_are_the_version_5_uuids_they_always_were() -> None:
    # Ids published before must be derived again, byte for byte, or redeliveries across an upgrade
    # would no longer be recognised: the pinned value, and uuid5 itself on names of every kind.
    assert derived_message_id("m1", "result") == "fa215b04-4b33-51ec-ada1-fd6b958af779"
    namespace = uuid.UUID("5b0f9d1e-2d6c-4f0a-9a57-3e1f6b7c8d90")
    rng = random.Random(7)
    for _ in range(500):
        parent = "".join(rng.choice("ab-/é0\u2603") for _ in range(rng.randrange(0, 40)))
        role = rng.choice(["result", "audit/step.completed", "", "events/3"])
        assert derived_message_id(parent, role) == str(uuid.uuid5(namespace, f"{parent}/{role}"))


def test_decode_names_the_problem_for_not_json() -> None:
    with pytest.raises(MalformedMessage, match="not valid JSON"):
        decode(TaskSubmitted, b"\x00\xffnot json")


def test_decode_names_the_fields_that_fail() -> None:
    with pytest.raises(MalformedMessage) as info:
        decode(TaskSubmitted, b'{"task_id": "t 1", "workflow": "w", "inputs": {}}')
    reason = info.value.reason
    assert "task_id" in reason and "input:" in reason and "inputs" in reason


def test_task_ids_must_be_printable_and_bounded() -> None:
    TaskSubmitted(task_id="order-42:retry@2", workflow="w", input={})
    for bad in ("", " x", "a/b", "x" * 201):
        with pytest.raises(ValueError):
            TaskSubmitted(task_id=bad, workflow="w", input={})
