"""What one audit record or dead letter means for the task console: a change to the task's summary and one
timeline entry (pure; ``tasks_index`` stores them).

A task's status as the console shows it:

- ``running``    opened (or resumed) and moving
- ``in_review``  parked on ``reviews.requested`` (a step, a halt or a proposed call waits for a person)
- ``completed`` | ``rejected`` | ``halted`` | ``failed``: ended, as its ``TaskResult`` says
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from handrail import jsontext
from handrail.audit import AuditRecord
from handrail.messages import DeadLetter, TaskStatus

#: Statuses a task can be filtered on.
STATUSES = ("running", "in_review", *(s.value for s in TaskStatus))
#: What an action does to the status; an action not named here leaves it as it is.
_STATUS_OF = {
    "task.opened": "running",
    "task.resumed": "running",
    "review.requested": "in_review",
    "review.escalated": "in_review",
    "review.approved": "running",
    **{f"task.{s.value}": s.value for s in TaskStatus},
}
#: One timeline entry is kept to this size: a step's patch or a task's output can be large, and the
#: page shows what happened, not the whole context (that is ``handrail trace``'s job).
MAX_ENTRY_BYTES = 16 * 1024
#: What of a step's details the timeline leaves out: the context seen is the whole context again.
_LEFT_OUT = frozenset({"context_seen", "handoff"})


@dataclass(frozen=True)
class Change:
    """One record's effect on its task: what the summary takes from it, and its timeline entry (JSON)."""

    record_id: str
    task_id: str
    at_ms: int
    entry: str
    status: str = ""
    workflow: str = ""
    agent: str = ""
    reason: str = ""
    tokens: int = 0
    cost_usd: float = 0.0
    steps: int = 0
    #: The record carries the task's totals (its end): they replace the running sums.
    totals: bool = False
    #: 1: the task ended; -1: it runs again (resumed); 0: neither.
    ended: int = 0
    trace_id: str = ""
    dead_letter: bool = False


def from_audit(record: AuditRecord, trace_id: str = "") -> Change:
    """The change an audit record makes (``trace_id`` from its ``traceparent`` header, if any)."""
    action = record.action
    status = _STATUS_OF.get(action, "")
    ended = action.startswith("task.") and status in {s.value for s in TaskStatus}
    step = action.startswith("step.")
    details = {k: v for k, v in record.details.items() if k not in _LEFT_OUT}
    entry = {
        "kind": _kind(action),
        "seq": record.seq,
        "at": record.at.isoformat(),
        "action": action,
        "actor": record.actor,
        "step": record.step,
        "reason": record.reason,
        "tokens": record.tokens,
        "cost_usd": record.cost_usd,
        "input_hash": record.input_hash,
        "output_hash": record.output_hash,
        "details": bounded(details),
    }
    return Change(
        record_id=record.message_id,
        task_id=record.task_id,
        at_ms=int(record.at.timestamp() * 1000),
        entry=jsontext.dumps(entry).decode(),
        status=status,
        workflow=record.workflow or "",
        agent=record.actor.removeprefix("agent:") if record.actor.startswith("agent:") else "",
        reason=record.reason or "",
        tokens=record.tokens,
        cost_usd=record.cost_usd,
        steps=int(details.get("steps") or 0) if ended else int(step),
        totals=ended,
        ended=1 if ended else -1 if action == "task.resumed" else 0,
        trace_id=trace_id,
    )


def from_dead_letter(letter: DeadLetter, task_id: str) -> Change:
    """The timeline entry of a dead letter of a known task (the original itself stays on the topic)."""
    entry = {
        "kind": "dead_letter",
        "at": letter.dead_lettered_at.isoformat(),
        "action": "dead_letter",
        "actor": f"service:{letter.service}",
        "reason": letter.reason,
        "details": {
            "dead_letter_id": letter.message_id,
            "error_type": letter.error_type,
            "source": f"{letter.source_topic}[{letter.partition}]@{letter.offset}",
            "original_size": letter.original_size,
        },
    }
    return Change(
        record_id=f"dlq:{letter.message_id}",
        task_id=task_id,
        at_ms=int(letter.dead_lettered_at.timestamp() * 1000),
        entry=json.dumps(entry, separators=(",", ":")),
        dead_letter=True,
    )


def _kind(action: str) -> str:
    """The entry's kind, which the page draws: hop, budget, review, halt, task, dead_letter or other."""
    family = action.split(".", 1)[0]
    return {
        "step": "hop",
        "budget": "budget",
        "review": "review",
        "halt": "halt",
        "task": "task",
        "message": "dead_letter",
        "breaker": "halt",
        "loop": "halt",
    }.get(family, "other")


def bounded(details: dict[str, Any], max_bytes: int = MAX_ENTRY_BYTES) -> dict[str, Any]:
    """``details`` within ``max_bytes`` of JSON: the largest values are replaced by a note of their size."""
    sizes = {k: len(jsontext.dumps(v)) for k, v in details.items()}
    if sum(sizes.values()) <= max_bytes:
        return details
    kept = dict(details)
    total = sum(sizes.values())
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        kept[key] = {"truncated": True, "bytes": sizes[key]}
        total -= sizes[key]
        if total <= max_bytes:
            break
    return kept


def trace_id_of(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> str:
    """The W3C trace id a record's ``traceparent`` header carries (``handrail.observability``), or ''."""
    for name, value in headers:
        if name == "traceparent":
            parts = value.decode("latin-1").split("-")
            if len(parts) >= 3 and len(parts[1]) == 32 and parts[1] != "0" * 32:
                return parts[1]
    return ""
