"""What Kafka says about each task: the audit topic folded into the facts Redis must hold.

Every decision on a task is an audit record (``handrail.audit``), in the order
it was taken, in the task's partition. Folding them gives back what Redis had:

- the task record: its submission, workflow, status, the hash the chain is
  committed to (the last verified hop's output) and the id of its one result;
- the messages accepted into the chain, so a hop in flight at the loss is
  resumed rather than refused;
- the audit chain's head and sequence number, and the sealed records, so the
  chain continues where it stopped and a redelivery gets its record back;
- the budget: caps and deadline from the opening, spend from every step
  (or the spend the latest step carried, if more), and what people granted
  approving its halts or gave back for the time it was parked (``budget.granted``).

The control topic adds the halts in force and each (agent, workflow)'s latest
autonomy change (``handrail.autonomy``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from handrail.audit.record import AuditRecord
from handrail.autonomy.records import AutonomyChanged
from handrail.checkpoints import RESUMED
from handrail.contracts.workflows import branch_hop
from handrail.hashing import GENESIS
from handrail.messages import ControlRecord, TaskStatus
from handrail.state.budgets import Amount, Caps, Grant

#: A task whose opening is not on the audit topic (a rejected submission) owns its id all the same.
UNKNOWN_SUBMISSION = "unknown (rebuilt from the audit topic)"
_ENDINGS = {f"task.{status.value}": status.value for status in TaskStatus}
_ROUTER = "router"


@dataclass
class Spend:
    """Spend counted so far: tokens, micro-dollars, steps."""

    tokens: int = 0
    cost_usd: float = 0.0
    steps: int = 0

    def add(self, tokens: int, cost_usd: float, steps: int) -> None:
        self.tokens += tokens
        self.cost_usd += cost_usd
        self.steps += steps

    def at_least(self, tokens: int, cost_usd: float, steps: int) -> None:
        self.tokens = max(self.tokens, tokens)
        self.cost_usd = max(self.cost_usd, cost_usd)
        self.steps = max(self.steps, steps)

    def amount(self) -> Amount:
        return Amount(tokens=self.tokens, cost_usd=self.cost_usd, steps=self.steps)


@dataclass
class BudgetFacts:
    caps: Caps
    deadline_ms: int
    used: Spend = field(default_factory=Spend)
    by_agent: dict[str, Spend] = field(default_factory=dict)
    #: grant id -> what a person granted (or parked time gave back), each applied once.
    grants: dict[str, Grant] = field(default_factory=dict)


@dataclass
class TaskFacts:
    """One task as its audit records tell it."""

    task_id: str
    workflow: str = "unknown"
    submission: str | None = None
    opened_at: str | None = None
    head: str | None = None
    status: str | None = None
    result_id: str | None = None
    ended_at: str | None = None
    published: bool = False
    #: After ``handrail task resume``: the run the task is on, and the result of the run before.
    epoch: int = 1
    supersedes: str | None = None
    accepted: set[str] = field(default_factory=set)
    audit_head: str = GENESIS
    audit_seq: int = 0
    records: dict[str, str] = field(default_factory=dict)
    budget: BudgetFacts | None = None
    #: The heads of the branches of parallel steps (``head:<step>.<branch>``), and per parallel step the
    #: entries of the branches that are in (``TaskStore.branch_done``'s JSON).
    branch_heads: dict[str, str] = field(default_factory=dict)
    joins: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def is_task(self) -> bool:
        """Whether the records show a task (opened or ended), not only a chain (an operator's halt)."""
        return self.submission is not None or self.status is not None

    def task_record(self) -> dict[str, str]:
        """The fields of the task's Redis record (``handrail.state.tasks``)."""
        record = {
            "submission": self.submission or UNKNOWN_SUBMISSION,
            "workflow": self.workflow,
            "status": self.status or "running",
            "head": self.head or GENESIS,
            "rebuilt": "1",
            **self.branch_heads,
        }
        if self.published:
            record["published"] = "1"
        if self.epoch > 1:
            record["epoch"] = str(self.epoch)
            record["supersedes"] = self.supersedes or ""
        for name, value in (("opened_at", self.opened_at), ("result_id", self.result_id), ("ended_at", self.ended_at)):
            if value is not None:
                record[name] = value
        return record

    def fold(self, record: AuditRecord, raw: str) -> None:
        """Take in the task's next audit record (log order); a record published twice is taken once."""
        if record.message_id in self.records:
            # A writer that crashed after publishing, or two operators resuming a task at once, publish
            # the same sealed record again: folding it twice would charge a step twice, or forget what a
            # resumed run supersedes.
            return
        self.records[record.message_id] = raw
        if record.seq > self.audit_seq:
            self.audit_seq, self.audit_head = record.seq, record.record_hash
        if record.workflow:
            self.workflow = record.workflow
        action, source = record.action, record.source_id
        if action == "task.opened":
            self._opened(record)
        elif action == "handoff.accepted" or action.startswith("step."):
            # A step's record also stands for the handoff it ran on (``details.handoff``; older trails
            # have a handoff.accepted record of their own): both were accepted into the chain.
            branch = branch_hop(record.step or "")
            if branch is None:
                self.head = record.output_hash or self.head
            else:
                self._branch(record, *branch)
            handoff = record.details.get("handoff")
            for accepted in (source, handoff.get("message_id") if isinstance(handoff, dict) else None):
                if isinstance(accepted, str) and accepted:
                    self.accepted.add(accepted)
            if action.startswith("step."):
                self._charge(record.actor.removeprefix("agent:"), record, steps=1)
                snapshot = record.details.get("budget")
                if isinstance(snapshot, dict) and self.budget is not None:
                    self.budget.used.at_least(
                        int(snapshot.get("tokens_used", 0)),
                        float(snapshot.get("cost_usd_used", 0.0)),
                        int(snapshot.get("steps_used", 0)),
                    )
        elif action == "branches.joined":
            self.head = record.output_hash or self.head
        elif action == "budget.granted":
            self._granted(record)
        elif action in _ENDINGS:
            self.status, self.result_id, self.ended_at = _ENDINGS[action], source, record.at.isoformat()
        elif action == RESUMED:
            # A new run from a checkpoint: the chain is committed to the hash its handoff leaves from.
            superseded = record.details.get("supersedes")
            self.supersedes = superseded if isinstance(superseded, str) and superseded else self.result_id
            self.status = self.result_id = self.ended_at = None
            self.published = False
            self.head = record.input_hash or self.head
            self.epoch = int(record.details.get("epoch") or self.epoch + 1)

    def _branch(self, record: AuditRecord, step: str, branch: str) -> None:
        """A branch's step record: its own head, and, once completed, its entry in the join (its output is
        what its patch put under ``steps.<step>.<branch>``)."""
        hop = f"{step}.{branch}"
        if record.output_hash:
            self.branch_heads[f"head:{hop}"] = record.output_hash
        if record.action in ("step.failed", "step.halted") and record.output_hash:
            # Of a step that goes on without its failed branches, this one is in, and failed.
            failed = {"head": record.output_hash, "output": {}, "agent": record.actor.removeprefix("agent:")}
            failed |= {"budget": record.details.get("budget") or {}, "failed": record.reason or record.action}
            self.joins.setdefault(step, {})[branch] = json.dumps(failed)
            return
        if record.action != "step.completed" or not record.output_hash:
            return
        patch = record.details.get("patch") or []
        output = next(
            (op.get("value") for op in patch if isinstance(op, dict) and op.get("path") == f"/steps/{hop}"),
            None,
        )
        if isinstance(output, dict):
            entry = {
                "head": record.output_hash,
                "output": output,
                "agent": record.actor.removeprefix("agent:"),
                "budget": record.details.get("budget") or {},
            }
            self.joins.setdefault(step, {})[branch] = json.dumps(entry)

    def _opened(self, record: AuditRecord) -> None:
        self.submission = record.source_id or UNKNOWN_SUBMISSION
        self.opened_at = record.at.isoformat()
        if self.head is None:
            # The head the router's first handoff leaves from. Whether the agent took it on is not known
            # (no agent records that): a step run on it chains on from here too (``TaskStore.accept``'s via).
            self.head = record.input_hash
        caps = record.details.get("budget")
        deadline = record.details.get("deadline")
        if isinstance(caps, dict) and isinstance(deadline, str):
            self.budget = BudgetFacts(
                Caps(int(caps["max_tokens"]), float(caps["max_cost_usd"]), int(caps["max_steps"])),
                int(datetime.fromisoformat(deadline).timestamp() * 1000),
            )
        self._charge(_ROUTER, record, steps=0)

    def _granted(self, record: AuditRecord) -> None:
        details = record.details
        grant_id = details.get("grant_id")
        if self.budget is None or not isinstance(grant_id, str):
            return
        top_up = details.get("top_up") or {}
        self.budget.grants[grant_id] = Grant(
            task_id=self.task_id,
            grant_id=grant_id,
            agent=str(details.get("agent") or ""),
            extra=Amount(int(top_up.get("tokens", 0)), float(top_up.get("cost_usd", 0.0)), int(top_up.get("steps", 0))),
            wall_ms=int(details.get("wall_ms", 0)),
            extend_ms=int(details.get("extend_ms", 0)),
        )

    def _charge(self, agent: str, record: AuditRecord, *, steps: int) -> None:
        if self.budget is None:
            return
        self.budget.used.add(record.tokens, record.cost_usd, steps)
        self.budget.by_agent.setdefault(agent, Spend()).add(record.tokens, record.cost_usd, steps)


@dataclass
class Facts:
    """Everything folded from the audit and control topics."""

    tasks: dict[str, TaskFacts] = field(default_factory=dict)
    #: (scope, name) -> (reason, by) for every halt still in force.
    halts: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)
    #: (agent, workflow) -> its latest autonomy change (an override, or the one that cleared it).
    autonomy: dict[tuple[str, str], AutonomyChanged] = field(default_factory=dict)
    records: int = 0
    unreadable: int = 0

    def fold_audit(self, value: bytes) -> None:
        try:
            record = AuditRecord.model_validate_json(value)
        except ValueError:
            self.unreadable += 1  # not ours to judge here: `handrail audit verify` reports it
            return
        self.records += 1
        facts = self.tasks.get(record.task_id)
        if facts is None:
            facts = self.tasks[record.task_id] = TaskFacts(record.task_id)
        facts.fold(record, record.model_dump_json())

    def fold_result(self, task_id: str, result_id: str | None = None) -> None:
        """A result of ``task_id`` is on the results topic: it is never published again.

        A resumed task has a result per run: only its current run's (``result_id``) counts.
        """
        facts = self.tasks.get(task_id)
        if facts is None:
            facts = self.tasks[task_id] = TaskFacts(task_id)
        if facts.epoch == 1 or result_id is None or result_id == facts.result_id:
            facts.published = True

    def fold_control(self, control: ControlRecord) -> None:
        """Take in a control record: the latest word on each halt wins."""
        if control.kind != "halt" or control.by.startswith("worker:"):
            # A worker's halt stopped one step (a budget, a loop window): the circuit-breaker records
            # it for the trail, but it was never a standing halt, and must not become one on a rebuild.
            return
        key = (control.scope, control.name)
        if control.state == "halted":
            self.halts[key] = (control.reason, control.by, control.error_type or "")
        else:
            self.halts.pop(key, None)

    def fold_autonomy(self, change: AutonomyChanged) -> None:
        """Take in an autonomy change: the newest (by revision, then time) wins, whatever the log order."""
        pair = (change.agent, change.workflow)
        known = self.autonomy.get(pair)
        if known is None or change.order > known.order:
            self.autonomy[pair] = change
