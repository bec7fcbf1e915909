"""Payload models: strictness and stable derived ids."""

from __future__ import annotations

import pytest

from handrail.bus.pipeline import decode
from handrail.errors import MalformedMessage
from handrail.messages import TaskSubmitted, derived_message_id


def test_derived_ids_are_stable_and_distinct_per_role() -> None:
    assert derived_message_id("m1", "result") == derived_message_id("m1", "result")
    assert derived_message_id("m1", "result") != derived_message_id("m1", "handoff")
    assert derived_message_id("m1", "result") != derived_message_id("m2", "result")


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
