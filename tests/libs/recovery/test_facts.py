"""Folding a task's audit records back into the state Redis held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from handrail.audit import AuditRecord
from handrail.hashing import GENESIS
from handrail.messages import ControlRecord
from handrail.recovery.facts import UNKNOWN_SUBMISSION, Facts
from handrail.state.budgets import Amount

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def chain(task_id: str, *decisions: dict[str, Any]) -> list[bytes]:
    """Sealed records for ``decisions`` (fields of AuditRecord), linked as AuditLog links them."""
    out, prev = [], GENESIS
    for seq, fields in enumerate(decisions, start=1):
        draft = AuditRecord(
            message_id=f"{task_id}-a{seq}",
            task_id=task_id,
            seq=seq,
            prev_hash=prev,
            record_hash=GENESIS,
            at=NOW,
            **fields,
        )
        sealed = draft.model_copy(update={"record_hash": draft.computed_hash()})
        out.append(sealed.model_dump_json().encode())
        prev = sealed.record_hash
    return out


OPENED = {
    "source_id": "tasks:0:7",
    "actor": "service:router",
    "action": "task.opened",
    "workflow": "expense-approval",
    "input_hash": "g" * 64,
    "output_hash": "c1" * 32,
    "details": {
        "deadline": (NOW + timedelta(seconds=60)).isoformat(),
        "budget": {"max_steps": 5, "max_tokens": 1000, "max_cost_usd": 0.5},
    },
    "cost_usd": 0.01,
    "tokens": 10,
}


def step(source: str, agent: str, parent: str, out: str, cost: float, tokens: int) -> dict[str, Any]:
    return {
        "source_id": source,
        "actor": f"agent:{agent}",
        "action": "step.completed",
        "input_hash": parent,
        "output_hash": out,
        "cost_usd": cost,
        "tokens": tokens,
        "details": {"budget": {"tokens_used": 0, "cost_usd_used": 0.0, "steps_used": 0}},
    }


def test_a_running_task_comes_back_with_its_head_accepted_hops_chain_and_spend() -> None:
    facts = Facts()
    handoff = {"source_id": "m1", "actor": "agent:intake", "action": "handoff.accepted", "output_hash": "c1" * 32}
    for raw in chain("t1", OPENED, handoff, step("m2", "intake", "c1" * 32, "c2" * 32, 0.02, 100)):
        facts.fold_audit(raw)
    task = facts.tasks["t1"]
    record = task.task_record()
    assert record["submission"] == "tasks:0:7" and record["status"] == "running"
    assert record["head"] == "c2" * 32, "the chain is committed to the last verified hop"
    assert task.accepted == {"m1", "m2"}
    assert task.audit_seq == 3 and len(task.records) == 3
    assert task.audit_head == AuditRecord.model_validate_json(list(task.records.values())[-1]).record_hash
    assert task.budget is not None
    assert task.budget.caps.steps == 5 and task.budget.used.steps == 1
    assert round(task.budget.used.cost_usd, 6) == 0.03 and task.budget.used.tokens == 110
    assert task.budget.by_agent["intake"].tokens == 100 and task.budget.by_agent["router"].tokens == 10


def test_an_ended_task_keeps_its_one_result_and_a_rejected_one_still_owns_its_id() -> None:
    facts = Facts()
    ended = {"source_id": "r-1", "actor": "service:validator", "action": "task.completed", "input_hash": "c1" * 32}
    for raw in chain("t1", OPENED, ended):
        facts.fold_audit(raw)
    for raw in chain("t2", {"source_id": "r-2", "actor": "service:router", "action": "task.rejected"}):
        facts.fold_audit(raw)
    assert facts.tasks["t1"].task_record()["status"] == "completed"
    assert facts.tasks["t1"].task_record()["result_id"] == "r-1"
    rejected = facts.tasks["t2"].task_record()
    assert rejected["status"] == "rejected" and rejected["submission"] == UNKNOWN_SUBMISSION


def test_a_step_snapshot_above_the_sum_wins_and_unreadable_records_are_counted() -> None:
    facts = Facts()
    big = step("m2", "intake", "c1" * 32, "c2" * 32, 0.0, 0)
    big["details"] = {"budget": {"tokens_used": 900, "cost_usd_used": 0.4, "steps_used": 3}}
    for raw in chain("t1", OPENED, big):
        facts.fold_audit(raw)
    facts.fold_audit(b"{not json")
    budget = facts.tasks["t1"].budget
    assert budget is not None and budget.used.tokens == 900 and budget.used.steps == 3
    assert facts.unreadable == 1 and facts.records == 2


def test_only_halts_still_in_force_come_back() -> None:
    facts = Facts()
    for name, state, by in [
        ("a", "halted", "operator:x"),
        ("b", "halted", "operator:x"),
        ("a", "resumed", "operator:x"),
        ("c", "halted", "service:circuit-breaker"),
        ("d", "halted", "worker:expense-intake"),  # a budget stopped one step: never a standing halt
    ]:
        facts.fold_control(
            ControlRecord(
                message_id=f"c-{name}-{state}",
                kind="halt",
                scope="task",
                name=name,
                state=state,
                reason="ops",
                by=by,
                at=NOW,
                error_type="behaviour_deviation" if name == "c" else None,
            )
        )
    assert facts.halts == {
        ("task", "b"): ("ops", "operator:x", ""),
        ("task", "c"): ("ops", "service:circuit-breaker", "behaviour_deviation"),
    }


def test_grants_come_back_each_once_on_top_of_the_opening() -> None:
    """A top-up and parked time given back (``budget.granted``) are part of the budget a rebuild restores."""
    facts = Facts()
    granted = {
        "source_id": None,
        "actor": "reviewer:ops",
        "action": "budget.granted",
        "details": {
            "review_id": "rv1",
            "grant_id": "rv1/grant",
            "agent": "expense-intake",
            "top_up": {"tokens": 500, "cost_usd": 0.25, "steps": 1, "wall_clock_s": 30.0},
            "parked_ms": 12_000,
            "wall_ms": 30_000,
            "extend_ms": 42_000,
        },
    }
    for raw in chain("t1", OPENED, granted, granted):  # delivered twice: one grant
        facts.fold_audit(raw)
    budget = facts.tasks["t1"].budget
    assert budget is not None and list(budget.grants) == ["rv1/grant"]
    grant = budget.grants["rv1/grant"]
    assert grant.extra == Amount(tokens=500, cost_usd=0.25, steps=1) and grant.agent == "expense-intake"
    assert (grant.wall_ms, grant.extend_ms) == (30_000, 42_000)


def test_a_step_record_also_marks_the_handoff_it_ran_on_as_accepted() -> None:
    facts = Facts()
    taken = step("m2", "intake", "c1" * 32, "c2" * 32, 0.02, 100)
    taken["details"] = {**taken["details"], "handoff": {"message_id": "m1", "sender": "router"}}
    for raw in chain("t1", OPENED, taken):
        facts.fold_audit(raw)
    task = facts.tasks["t1"]
    # a redelivery of handoff m1 after the loss is known as taken on, not a hop on a moved head
    assert task.accepted == {"m1", "m2"} and task.task_record()["head"] == "c2" * 32


def test_a_task_lost_before_its_first_step_was_recorded_is_back_at_its_genesis() -> None:
    facts = Facts()
    for raw in chain("t1", OPENED):
        facts.fold_audit(raw)
    # the first handoff leaves from the submission's hash; whether the agent took it on is not recorded
    # (a step run on it chains on from here: TaskStore.accept's via)
    assert facts.tasks["t1"].task_record()["head"] == "g" * 64


def test_a_resumed_task_comes_back_running_from_its_checkpoint_and_only_its_new_result_counts() -> None:
    """``task.resumed`` reopens the task at the checkpoint's hash; the first run's result is not the new run's."""
    facts = Facts()
    failed = {"source_id": "r-1", "actor": "service:validator", "action": "task.failed", "input_hash": "c3" * 32}
    resumed = {
        "source_id": "resume-2",
        "actor": "operator:ana",
        "action": "task.resumed",
        "input_hash": "c2" * 32,
        "output_hash": "c2" * 32,
        "details": {"epoch": 2, "supersedes": "r-1", "checkpoint": {"kind": "step", "step": "intake"}},
    }
    for raw in chain("t1", OPENED, step("m2", "intake", "c1" * 32, "c2" * 32, 0.0, 0), failed, resumed):
        facts.fold_audit(raw)
    facts.fold_result("t1", "r-1")
    record = facts.tasks["t1"].task_record()
    assert record["status"] == "running" and record["head"] == "c2" * 32
    assert record["epoch"] == "2" and record["supersedes"] == "r-1"
    assert "result_id" not in record and "published" not in record, "the first run's result is not this run's"

    ended = {"source_id": "r-2", "actor": "service:validator", "action": "task.completed", "input_hash": "c4" * 32}
    for raw in chain("t1", OPENED, step("m2", "intake", "c1" * 32, "c2" * 32, 0.0, 0), failed, resumed, ended):
        facts.fold_audit(raw)
    facts.fold_result("t1", "r-1")
    assert "published" not in facts.tasks["t1"].task_record(), "a redelivery may still publish the new result"
    facts.fold_result("t1", "r-2")
    assert facts.tasks["t1"].task_record()["published"] == "1"


def test_a_record_published_twice_is_folded_once() -> None:
    """Two operators resuming at once, or a writer that crashed after publishing, put a record on the topic twice."""
    facts = Facts()
    failed = {"source_id": "r-1", "actor": "service:validator", "action": "task.failed", "input_hash": "c3" * 32}
    resumed = {
        "source_id": "resume-2",
        "actor": "operator:ana",
        "action": "task.resumed",
        "input_hash": "c2" * 32,
        "details": {"epoch": 2, "supersedes": "r-1"},
    }
    records = chain("t1", OPENED, step("m2", "intake", "c1" * 32, "c2" * 32, 0.02, 100), failed, resumed)
    for raw in [*records[:2], records[1], *records[2:], records[3]]:
        facts.fold_audit(raw)
    task = facts.tasks["t1"]
    assert task.task_record()["supersedes"] == "r-1" and task.epoch == 2
    assert task.budget is not None and task.budget.used.steps == 1 and task.budget.used.tokens == 110
    assert facts.records == 6 and len(task.records) == 4
