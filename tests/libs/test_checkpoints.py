"""Where a task stands for ``task resume|fork``: its good checkpoints, its run, and what may be done with it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.fixtures.stack import PROJECT_ROOT

from handrail.audit import AuditRecord
from handrail.checkpoints import Trail, first_handoff_id, lineage_line
from handrail.contracts import load_contracts
from handrail.hashing import GENESIS
from handrail.messages import StepOverrides, TaskStatus, derived_message_id
from handrail.restarts import RestartRefused, check_forkable, check_resumable, fork_id, merged_overrides, top_up_grant
from handrail.tools import default_registry

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
WORKFLOW = load_contracts(PROJECT_ROOT / "config", default_registry().names()).workflows["expense-approval"]


def record(seq: int, action: str, **fields: Any) -> AuditRecord:
    fields.setdefault("workflow", "expense-approval")
    fields.setdefault("actor", "service:validator")
    return AuditRecord(
        message_id=f"a{seq}", task_id="t1", seq=seq, prev_hash=GENESIS, record_hash=GENESIS, at=NOW, action=action,
        **fields,
    )  # fmt: skip


OPENED = record(
    1, "task.opened", source_id="tasks:0:1", step="intake", input_hash="a" * 64, output_hash="b" * 64,
    details={"handed_to": "expense-intake"},
)  # fmt: skip
INTAKE = record(2, "step.completed", source_id="s-intake", step="intake", input_hash="b" * 64, output_hash="c" * 64)
DECIDE = record(3, "step.completed", source_id="s-decide", step="decide", input_hash="c" * 64, output_hash="d" * 64)


def ended(seq: int, status: str, source: str) -> AuditRecord:
    return record(seq, f"task.{status}", source_id=source)


def test_the_last_good_checkpoint_skips_the_step_the_task_failed_on() -> None:
    failed_on_decide = ended(4, "failed", derived_message_id("s-decide", "result"))
    trail = Trail.of("t1", [OPENED, INTAKE, DECIDE, failed_on_decide])
    assert trail.status == TaskStatus.FAILED and trail.epoch == 1
    assert [c.step for c in trail.checkpoints] == ["intake", "intake"]
    last = trail.last
    assert last is not None and last.kind == "step" and last.message_id == "s-intake" and last.context_hash == "c" * 64
    assert check_resumable(trail, WORKFLOW) == last


def test_before_any_step_the_checkpoint_is_the_opening_handoff() -> None:
    trail = Trail.of("t1", [OPENED, ended(2, "halted", "r-halted")])
    checkpoint = check_resumable(trail, WORKFLOW)
    assert checkpoint.kind == "opening" and checkpoint.agent == "expense-intake"
    assert checkpoint.message_id == first_handoff_id("tasks:0:1") and checkpoint.context_hash == "b" * 64


@pytest.mark.parametrize(
    ("records", "said"),
    [
        ([OPENED, INTAKE], "is still running (run 1)"),
        ([OPENED, INTAKE, DECIDE, ended(4, "completed", "r")], "ended completed, which is final"),
        ([OPENED, INTAKE, ended(3, "rejected", "r")], "ended rejected, which is final"),
        ([ended(1, "rejected", "r")], "was never opened"),
        ([OPENED, INTAKE, DECIDE, ended(4, "halted", "r")], "is the workflow's last: nothing is left to run"),
        (
            [
                OPENED,
                record(2, "step.completed", source_id="s", step="audit", output_hash="e" * 64),
                ended(3, "failed", "r"),
            ],
            "at step 'audit', which workflow 'expense-approval' no longer has",
        ),
    ],
)
def test_only_a_failed_or_halted_task_with_something_left_to_run_resumes(records: list[AuditRecord], said: str) -> None:
    with pytest.raises(RestartRefused, match=re.escape(said)):
        check_resumable(Trail.of("t1", records), WORKFLOW)


def test_a_resumed_run_is_counted_and_says_who_started_it() -> None:
    resumed = record(4, "task.resumed", source_id="res", actor="operator:ana", reason="fixed", details={"epoch": 2})
    trail = Trail.of("t1", [OPENED, INTAKE, ended(3, "failed", "r1"), resumed])
    assert trail.status is None and trail.epoch == 2 and trail.result_id is None
    with pytest.raises(RestartRefused, match="running again: operator:ana resumed it as run 2 \\(fixed\\)"):
        check_resumable(trail, WORKFLOW)
    again = Trail.of("t1", [OPENED, INTAKE, ended(3, "failed", "r1"), resumed, ended(5, "halted", "r2")])
    assert again.epoch == 2 and again.status == TaskStatus.HALTED and again.result_id == "r2"


def test_a_fork_starts_from_an_accepted_step_with_something_after_it() -> None:
    trail = Trail.of("t1", [OPENED, INTAKE, DECIDE, ended(4, "completed", "r")])
    assert check_forkable(trail, "intake", WORKFLOW).message_id == "s-intake"
    with pytest.raises(RestartRefused, match="is the last of workflow"):
        check_forkable(trail, "decide", WORKFLOW)
    with pytest.raises(RestartRefused, match="has no step 'audit'"):
        check_forkable(trail, "audit", WORKFLOW)
    early = Trail.of("t1", [OPENED, ended(2, "halted", "r")])
    with pytest.raises(RestartRefused, match=r"not an accepted step.*accepted steps: none yet"):
        check_forkable(early, "intake", WORKFLOW)


def test_a_fork_id_is_the_same_for_the_same_fork_and_differs_for_another() -> None:
    checkpoint = Trail.of("t1", [OPENED, INTAKE]).of_step("intake")
    assert checkpoint is not None
    prompt3 = StepOverrides(prompts={"expense-approver": "3"})
    assert fork_id("t1", checkpoint, prompt3) == fork_id("t1", checkpoint, prompt3)
    assert fork_id("t1", checkpoint, prompt3) != fork_id("t1", checkpoint, None)
    assert fork_id("t1", checkpoint, None).startswith("t1.fork-")
    carried = StepOverrides(prompts={"expense-approver": "2"}, models={"expense-approver": "scripted"})
    assert merged_overrides(carried, prompt3) == StepOverrides(
        prompts={"expense-approver": "3"}, models={"expense-approver": "scripted"}
    )


def test_a_resume_grants_the_top_up_and_gives_back_the_time_the_task_sat_ended_once_per_run() -> None:
    from handrail.messages import BudgetTopUp

    grant = top_up_grant("t1", 2, "expense-approver", BudgetTopUp(steps=1, wall_clock_s=30), idle_ms=5000)
    assert grant is not None and grant.extra.steps == 1 and grant.agent == "expense-approver"
    assert grant.wall_ms == 30_000 and grant.extend_ms == 35_000
    assert grant.grant_id == top_up_grant("t1", 2, "x", None, idle_ms=1).grant_id  # type: ignore[union-attr]
    assert grant.grant_id != top_up_grant("t1", 3, "x", None, idle_ms=1).grant_id  # type: ignore[union-attr]
    assert top_up_grant("t1", 2, "x", None, idle_ms=0) is None


def test_trace_says_where_a_task_came_from_and_went() -> None:
    source = {"task_id": "t0", "step": "intake", "overrides": {"prompts": {"expense-approver": "3"}, "models": {}}}
    opened = record(1, "task.opened", details={"forked_from": source})
    assert lineage_line(opened) == "[bold]forked from[/bold] task t0 at step intake (prompt expense-approver@3)"
    forked = record(2, "task.forked", details={"forked_to": {"task_id": "t9", "step": "intake"}})
    assert lineage_line(forked) == "[bold]forked to[/bold] task t9 from step intake"
    assert lineage_line(INTAKE) is None
    trail = Trail.of("t1", [opened, forked])
    assert trail.forked_from == source and trail.forked_to == [{"task_id": "t9", "step": "intake"}]
