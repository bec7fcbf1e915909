"""``handrail task resume`` and ``handrail task fork``: run a task again from a checkpoint (``handrail.restarts``).

Both read the task's audit trail and the checkpoint's message from Kafka, check everything
(nothing is changed when a check fails: exit 2, or 4 for a task with no audit records), then act
as the operator: Redis, the audit trail, and the handoff to the agent, signed with the operator key.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from handrail.audit import AuditLog, AuditRecord
from handrail.audit.reader import read_key
from handrail.bus.broker import make_broker
from handrail.bus.publisher import Publisher
from handrail.checkpoints import Checkpoint, Trail
from handrail.contracts import Contracts, WorkflowSpec, load_contracts
from handrail.hashing import context_hash
from handrail.lifecycle import Lifecycle
from handrail.messages import BudgetTopUp, HandoffEnvelope, StepCompleted, utcnow
from handrail.messages.tasks import TASK_ID_PATTERN
from handrail.restarts import (
    Fork,
    Restart,
    RestartRefused,
    apply_fork,
    apply_restart,
    check_forkable,
    check_resumable,
    fork_id,
    fork_opening,
    later_agents,
    merged_overrides,
    resumed_handoff,
    top_up_grant,
)
from handrail.state import TaskStore
from handrail.state.budgets import BudgetStore
from handrail.state.controls import ControlStore
from handrail.state.tasks import Reopening
from handrail.tools import default_registry
from handrail.topics import Topics
from handrail.topups import beyond_the_workflow, granted_so_far
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, resolve_task, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.halts import apply_halt
from handrail_cli.overrides import ModelOption, PromptOption, parse_overrides
from handrail_cli.review import parse_top_up
from handrail_cli.settings import CliSettings

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Run a failed or halted task again, or start a new task from one's step.")

BootstrapOption = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP).")


class Refused(Exception):
    """A check failed before anything changed: exit 2 (or ``code``) with the message."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Session:
    """What one command needs: settings, topics, contracts and, once ``open``, the operator's state and bus."""

    settings: CliSettings
    topics: Topics
    contracts: Contracts
    bootstrap: str
    operator: str

    @classmethod
    def make(cls, bootstrap: str | None) -> _Session:
        settings = CliSettings()
        contracts = load_contracts(settings.config_dir, default_registry().names())
        return cls(
            settings,
            Topics(settings.topic_prefix),
            contracts,
            bootstrap or settings.kafka_bootstrap,
            f"operator:{getpass.getuser()}",
        )

    async def trail(self, task_id: str) -> Trail:
        raw = await read_key(self.bootstrap, self.topics.audit, task_id, self.settings.kafka_credentials())
        if not raw:
            raise Refused(f"no audit records for task {task_id} on {self.topics.audit}", ExitCode.NOT_FOUND)
        records: list[AuditRecord] = []
        for _, _, value in raw:
            try:
                records.append(AuditRecord.model_validate_json(value))
            except ValidationError:
                # Not ours to judge here (`handrail audit verify` reports it); no decision rests on it.
                continue
        return Trail.of(task_id, records)

    def workflow(self, trail: Trail) -> WorkflowSpec | None:
        return self.contracts.workflows.get(trail.workflow or "")

    async def checkpoint_message(self, task_id: str, checkpoint: Checkpoint) -> StepCompleted | HandoffEnvelope:
        """The checkpoint's message, its context checked against the hash the audit trail committed."""
        kind: type[StepCompleted] | type[HandoffEnvelope]
        if checkpoint.kind == "step":
            topic, kind = self.topics.steps, StepCompleted
        else:
            topic, kind = self.topics.agent(checkpoint.agent or ""), HandoffEnvelope
        for _, _, value in await read_key(self.bootstrap, topic, task_id, self.settings.kafka_credentials()):
            try:
                message = kind.model_validate_json(value)
            except ValidationError:
                continue  # not ours to judge here: the consumer dead-lettered it
            if message.message_id != checkpoint.message_id:
                continue
            if (
                context_hash(message.context) != checkpoint.context_hash
                or message.context_hash != checkpoint.context_hash
            ):
                raise Refused(
                    f"the checkpoint {checkpoint.message_id} on {topic} does not hash to what the audit trail "
                    f"committed ({checkpoint.context_hash}): it cannot be resumed from",
                    ExitCode.FAILED,
                )
            return message
        raise Refused(
            f"the checkpoint of task {task_id} ({checkpoint.kind} {checkpoint.step!r}, message "
            f"{checkpoint.message_id}) is no longer on {topic} (past its retention?)",
            ExitCode.FAILED,
        )


def _refused(exc: Refused) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {exc}", highlight=False)
    return typer.Exit(exc.code)


async def _checked(coro: Coroutine[Any, Any, T]) -> T:
    """``coro``, a ``RestartRefused`` (nothing was changed) as a usage error rather than a failure."""
    try:
        return await coro
    except RestartRefused as exc:
        raise Refused(str(exc)) from None


@app.command("resume")
def resume(
    task_id: str = typer.Argument(..., help="The failed or halted task (its id, or its unique start)."),
    reason: str = typer.Option(..., "--reason", help="Why; recorded on the task's audit trail with who resumed it."),
    top_up: str = typer.Option(
        None,
        "--top-up",
        help="More budget for the new run, e.g. 'steps=1,cost_usd=0.5,tokens=20000,wall_clock_s=300' "
        "(within the workflow's max_top_up, all the task's top-ups together).",
    ),
    as_json: bool = JsonOption,
    bootstrap: str = BootstrapOption,
) -> None:
    """Run a failed or halted task again from its last accepted step (a new run: its result supersedes the last).

    An operator's halt on the task is lifted; the time the task sat ended is given back to its wall
    clock. Completed and rejected tasks are final (exit 2); resuming the same run twice does it once.
    """
    extra = _top_up(top_up)
    session = _Session.make(bootstrap)
    task_id = resolve_task(task_id, session.settings)
    try:
        done = run(_checked(_resume(session, task_id, reason, extra)))
    except Refused as exc:
        raise _refused(exc) from None
    if as_json:
        print_json_lines([done])
        return
    again = " (it had been started before: nothing more was done)" if done["already"] else ""
    console.print(
        f"resumed task {task_id} as run {done['epoch']} from {done['from']}: {done['step']} handed to "
        f"{done['agent']}{again}",
        highlight=False,
    )


async def _resume(session: _Session, task_id: str, reason: str, extra: BudgetTopUp | None) -> dict[str, Any]:
    trail = await session.trail(task_id)
    workflow = session.workflow(trail)
    checkpoint = check_resumable(trail, workflow)
    assert workflow is not None
    source = await session.checkpoint_message(task_id, checkpoint)
    agent = source.receiver if isinstance(source, HandoffEnvelope) else _next_agent(workflow, source.step)
    epoch = trail.epoch + 1
    async with _Operator(session) as op:
        if extra is not None:
            before = await granted_so_far(op.budgets, task_id)
            if refused := beyond_the_workflow(workflow, workflow.name, task_id, before, extra):
                raise Refused(refused)
        if await op.redis.exists(op.controls.halt_key("agent", agent)):
            raise Refused(
                f"agent {agent} is halted, so the resumed step would halt at once: `handrail resume --agent {agent}` "
                "lifts that first"
            )
        idle_ms = int((utcnow() - trail.ended_at).total_seconds() * 1000) if trail.ended_at is not None else 0
        grant = top_up_grant(task_id, epoch, agent, extra, idle_ms)
        handoff = resumed_handoff(source, workflow, epoch, spent=await op.budgets.usage(task_id), grant=grant)
        if await op.redis.exists(op.controls.halt_key("task", task_id)):
            await apply_halt("task", task_id, "resumed", f"lifted to resume the task: {reason}")
        restart = Restart(
            task_id, workflow.name, epoch, checkpoint, handoff.parent_hash, handoff, session.operator, reason,
            trail.result_id, grant,
        )  # fmt: skip
        outcome = await apply_restart(op.lifecycle, restart)
    return {
        "task_id": task_id,
        "epoch": epoch,
        "from": "its opening" if checkpoint.kind == "opening" else f"step {checkpoint.step}",
        "checkpoint": checkpoint.message_id,
        "step": handoff.step,
        "agent": handoff.receiver,
        "supersedes": trail.result_id,
        "already": outcome == Reopening.ALREADY,
    }


@app.command("fork")
def fork(
    task_id: str = typer.Argument(..., help="The task to fork (its id, or its unique start)."),
    from_step: str = typer.Option(..., "--from-step", help="An accepted step of the task: the fork runs what follows."),
    prompt: list[str] = PromptOption,
    model: list[str] = ModelOption,
    new_task_id: str = typer.Option(
        None, "--task-id", help="The fork's id (default: derived from TASK, step and overrides)."
    ),
    reason: str = typer.Option(..., "--reason", help="Why; recorded on both tasks' audit trails."),
    as_json: bool = JsonOption,
    bootstrap: str = BootstrapOption,
) -> None:
    """Start a new task from step S's checkpoint of TASK, optionally with other prompts or models.

    The fork has its own id, a fresh budget and the step's context and hash; its audit trail names
    its source (forked_from) and the source's names the fork (forked_to): `handrail trace` shows both.
    """
    if new_task_id is not None and not re.match(TASK_ID_PATTERN, new_task_id):
        raise typer.BadParameter("letters, digits and . _ : @ - only, at most 200", param_hint="--task-id")
    session = _Session.make(bootstrap)
    task_id = resolve_task(task_id, session.settings)
    try:
        done = run(_checked(_fork(session, task_id, from_step, prompt or [], model or [], new_task_id, reason)))
    except Refused as exc:
        raise _refused(exc) from None
    if as_json:
        print_json_lines([done])
        return
    console.print(
        f"forked task {task_id} at step {from_step} as {done['task_id']}: {done['step']} handed to {done['agent']}"
        + (f" (overrides: {done['overrides']})" if done["overrides"] else ""),
        highlight=False,
    )


async def _fork(
    session: _Session,
    task_id: str,
    step: str,
    prompts: list[str],
    models: list[str],
    new_task_id: str | None,
    reason: str,
) -> dict[str, Any]:
    trail = await session.trail(task_id)
    workflow = session.workflow(trail)
    checkpoint = check_forkable(trail, step, workflow)
    assert workflow is not None
    later = later_agents(workflow, step)
    asked = parse_overrides(session.contracts, session.settings.config_dir, prompts, models, later, f"after {step!r}")
    source = await session.checkpoint_message(task_id, checkpoint)
    assert isinstance(source, StepCompleted)
    overrides = merged_overrides(source.overrides, asked)
    new_task = new_task_id or fork_id(task_id, checkpoint, overrides)
    if new_task == task_id:
        raise Refused("a fork needs an id of its own (--task-id)")
    opening = fork_opening(new_task, source, checkpoint, workflow, overrides, actor=session.operator)
    async with _Operator(session) as op:
        await apply_fork(op.lifecycle, Fork(task_id, checkpoint, opening, session.operator, reason, overrides))
    first = opening.first
    assert first is not None
    return {
        "task_id": new_task,
        "forked_from": task_id,
        "step": first.step,
        "agent": first.receiver,
        "checkpoint": checkpoint.message_id,
        "overrides": overrides.model_dump(mode="json") if overrides is not None else None,
    }


def _next_agent(workflow: WorkflowSpec, step: str) -> str:
    following = workflow.next_step(step)
    assert following is not None, "check_resumable refuses the last step"
    return following.agents[0]  # and a parallel step


def _top_up(text: str | None) -> BudgetTopUp | None:
    if text is None:
        return None
    try:
        return BudgetTopUp.model_validate(parse_top_up(text))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems, param_hint="--top-up") from None


class _Operator:
    """The operator's Redis, bus and lifecycle for one command (an async context)."""

    def __init__(self, session: _Session) -> None:
        settings = session.settings
        self.redis = settings.redis_client()
        self.broker = make_broker(session.bootstrap, client_id="handrail-cli", credentials=settings.kafka_credentials())
        publisher = Publisher(self.broker, settings.operator_signer())
        self.controls = ControlStore(self.redis, settings.redis_prefix)
        self.budgets = BudgetStore(self.redis, settings.redis_prefix)
        audit = AuditLog(self.redis, publisher, session.topics.audit, settings.redis_prefix)
        store = TaskStore(self.redis, settings.redis_prefix)
        self.lifecycle = Lifecycle("operator", store, self.budgets, publisher, session.topics, audit)

    async def __aenter__(self) -> _Operator:
        await self.broker.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.broker.stop()
        await self.redis.aclose()
