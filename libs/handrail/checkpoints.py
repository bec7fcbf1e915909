"""Where a task stands, as its audit trail tells it: how it ended, which run it is on, and its good checkpoints.

A checkpoint is a point of the task's hash chain a new run can start from, with its whole
context still on Kafka:

- the task's opening: its first handoff (``<prefix>agent.<first agent>``, id derived from the
  submission), before any step was accepted;
- every step the validator accepted as ``step.completed`` (the ``StepCompleted`` on
  ``<prefix>steps``, id = the record's ``source_id``), except the one a task ended ``failed`` on
  (its output broke the schema, say): that step is not good.

``handrail task resume`` starts the next run from the last of them; ``handrail task fork`` starts a
new task from a step's. See ``handrail.restarts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from handrail.audit.record import AuditRecord
from handrail.messages import TaskStatus, derived_message_id

_ENDINGS = {f"task.{status.value}": status for status in TaskStatus}
#: Ended so: a new run may start from the last checkpoint. Completed and rejected are final.
RESUMABLE = frozenset({TaskStatus.FAILED, TaskStatus.HALTED})
#: The audit actions of resuming and forking (on the resumed task, on a fork's source).
RESUMED = "task.resumed"
FORKED = "task.forked"


def first_handoff_id(submission: str) -> str:
    """The id of the handoff that opened a task (``handrail.lifecycle.first_handoff``)."""
    return derived_message_id(submission, "handoff")


@dataclass(frozen=True)
class Checkpoint:
    """A point a new run can start from: the message that holds its context, and that context's hash."""

    kind: Literal["opening", "step"]
    #: The accepted step (kind ``step``), or the step the opening handed over (kind ``opening``).
    step: str
    message_id: str
    context_hash: str
    #: For an opening: the agent its first handoff went to (the topic it is on).
    agent: str | None = None


@dataclass
class Trail:
    """One task folded from its audit records (log order)."""

    task_id: str
    workflow: str | None = None
    submission: str | None = None
    status: TaskStatus | None = None  # None: running (or never opened)
    epoch: int = 1
    result_id: str | None = None
    ended_at: datetime | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    #: Who started the current run, and why (a resume's record), when it is not the first.
    resumed_by: str | None = None
    resumed_why: str | None = None
    forked_from: dict[str, Any] | None = None
    forked_to: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, task_id: str, records: list[AuditRecord]) -> Trail:
        trail = cls(task_id)
        for record in records:
            trail.fold(record)
        return trail

    @property
    def opened(self) -> bool:
        return self.submission is not None

    def fold(self, record: AuditRecord) -> None:
        if record.workflow:
            self.workflow = record.workflow
        action, details = record.action, record.details
        if action == "task.opened":
            lineage = details.get("forked_from")
            self.forked_from = lineage if isinstance(lineage, dict) else None
        if action == "task.opened" and record.source_id and record.output_hash and record.step:
            self.submission = record.source_id
            handed_to = details.get("handed_to")
            self.checkpoints.append(
                Checkpoint(
                    "opening",
                    record.step,
                    first_handoff_id(record.source_id),
                    record.output_hash,
                    str(handed_to) if handed_to else None,
                )
            )
        elif action == "step.completed" and record.source_id and record.output_hash and record.step:
            self.checkpoints.append(Checkpoint("step", record.step, record.source_id, record.output_hash))
        elif action in _ENDINGS:
            self.status, self.result_id, self.ended_at = _ENDINGS[action], record.source_id, record.at
            if self.status != TaskStatus.COMPLETED:
                # The step the task ended on (End.of derives the result's id from it) is not a good checkpoint.
                self.checkpoints = [
                    c for c in self.checkpoints if derived_message_id(c.message_id, "result") != record.source_id
                ]
        elif action == RESUMED:
            self.status, self.result_id, self.ended_at = None, None, None
            self.epoch = int(details.get("epoch") or self.epoch + 1)
            self.resumed_by, self.resumed_why = record.actor, record.reason
        elif action == FORKED:
            lineage = details.get("forked_to")
            if isinstance(lineage, dict):
                self.forked_to.append(lineage)

    @property
    def last(self) -> Checkpoint | None:
        """The checkpoint a resume starts from."""
        return self.checkpoints[-1] if self.checkpoints else None

    def of_step(self, step: str) -> Checkpoint | None:
        """The latest good checkpoint of accepted step ``step`` (what a fork from it starts from)."""
        for checkpoint in reversed(self.checkpoints):
            if checkpoint.kind == "step" and checkpoint.step == step:
                return checkpoint
        return None

    def accepted_steps(self) -> list[str]:
        """The names of the steps with a good checkpoint, in the order they were first accepted."""
        return list(dict.fromkeys(c.step for c in self.checkpoints if c.kind == "step"))


def lineage_line(record: AuditRecord) -> str | None:
    """What ``handrail trace`` says under a record that links tasks or runs: forked from, forked to, resumed."""
    details = record.details
    source, fork = details.get("forked_from"), details.get("forked_to")
    if record.action == "task.opened" and isinstance(source, dict):
        return (
            f"[bold]forked from[/bold] task {source.get('task_id')} at step {source.get('step')}{_overridden(source)}"
        )
    if record.action == FORKED and isinstance(fork, dict):
        return f"[bold]forked to[/bold] task {fork.get('task_id')} from step {fork.get('step')}{_overridden(fork)}"
    if record.action == RESUMED:
        checkpoint = details.get("checkpoint") or {}
        where = "its opening" if checkpoint.get("kind") == "opening" else f"step {checkpoint.get('step')}"
        return f"[bold]run {details.get('epoch')}[/bold] from {where}, superseding result {details.get('supersedes')}"
    return None


def _overridden(lineage: dict[str, Any]) -> str:
    overrides = lineage.get("overrides") or {}
    parts = [f"prompt {agent}@{version}" for agent, version in (overrides.get("prompts") or {}).items()]
    parts += [f"model {agent}={model}" for agent, model in (overrides.get("models") or {}).items()]
    return f" ({', '.join(parts)})" if parts else ""
