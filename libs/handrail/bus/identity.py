"""Which task a consumed message belongs to: decided here, once, for every consumer.

A message's task is the ``task_id`` in its body: it is the field of the public
contract, the one a caller awaits its result under. The Kafka key is used only
when the body names no readable task id (bytes that are not JSON, say). A key
that names a *different* task is refused (``task_id_mismatch``), and the refusal
— its dead letter and its ``TaskResult`` — goes under the body's task id: the
key decides only which partition the message landed on.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic_core

from handrail.bus.delivery import Delivery
from handrail.errors import TaskIdMismatch
from handrail.messages.tasks import TASK_ID_PATTERN

_VALID_ID = re.compile(TASK_ID_PATTERN)


def check_key(task_id: str, delivery: Delivery) -> None:
    """Refuse a message whose key names another task than its body (a keyless message is fine)."""
    if delivery.key is not None and delivery.key != task_id:
        raise TaskIdMismatch(
            f"the message key {delivery.key[:200]!r} names another task than its body's task_id {task_id!r}:"
            " publish each task keyed by its own task_id",
            task_id=task_id,
        )


def task_id_of(payload: Any, delivery: Delivery) -> str | None:
    """The task ``delivery`` belongs to: the decoded payload's, the body's ``task_id``, else the key."""
    task_id = getattr(payload, "task_id", None)
    if isinstance(task_id, str):
        return task_id
    found = body_field(delivery.value, "task_id")
    if isinstance(found, str) and _VALID_ID.match(found):
        return found
    key = delivery.key
    return key if key is not None and _VALID_ID.match(key) else None


def body_field(value: bytes, name: str) -> Any:
    """The top-level field ``name`` of a JSON object body, or None (any bytes: depth and size are bounded)."""
    try:
        body = pydantic_core.from_json(value)  # recursion-safe: nesting past its limit is a ValueError
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None
