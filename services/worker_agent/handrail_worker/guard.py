"""What the platform checks around every model and tool call of a step.

Before a call: the step's wall clock, then in one Redis round trip
(``handrail.state.admission``) halts (task or agent), open breakers, the loop
window (tools), and a budget reservation. After it: a decision event goes to
``<prefix>events`` for the circuit-breaker service, and the budget is settled with
what the call really used - in the same round trip as the next call's admission,
or, for the step's last call, with the read of what the task spent (``spent``).
Whatever ends the step, ``settle_pending`` settles what is left. A check that fails stops
the task before the call (``TaskHalted``), except an open tool breaker, which
the model sees as a structured error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from handrail.contracts import AgentSpec
from handrail.errors import RetryableError, TaskHalted
from handrail.messages import DecisionEvent, HandoffEnvelope, derived_message_id, utcnow
from handrail.metrics import CALL_SECONDS, MODEL_COST_USD, MODEL_TOKENS, labels
from handrail.state.admission import Admission, Admissions, Admit, LoopWindow
from handrail.state.budgets import Amount, BudgetStore, Caps, Settlement, Usage, Verdict
from handrail.state.controls import Halt
from handrail.tools import ToolCallError, ToolSpec


class EventSink(Protocol):
    async def emit(self, event: DecisionEvent) -> None: ...


@dataclass(frozen=True)
class Ticket:
    """A granted call: its reservation, and when it started."""

    reservation_id: str
    kind: str
    name: str
    args_hash: str | None
    started: float
    #: What the reservation also holds besides the call: the step itself, for the step's first call.
    carried: Amount = field(default_factory=Amount)
    #: For a model call: the prompt version (name@version) it is made with.
    prompt: str | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


class StepGuard:
    """The checks around the calls of one step of one task."""

    def __init__(
        self,
        agent: AgentSpec,
        envelope: HandoffEnvelope,
        budgets: BudgetStore,
        admissions: Admissions,
        events: EventSink,
    ) -> None:
        self.agent = agent
        self.env = envelope
        self.budgets = budgets
        self.admissions = admissions
        self.events = events
        self._unsettled: Settlement | None = None
        #: The step's own count, reserved with its first call (one round trip less per step).
        self._step: Amount | None = None
        self.started = time.monotonic()
        limits = agent.limits
        self.agent_caps = Caps(tokens=limits.max_tokens, cost_usd=limits.max_cost_usd, steps=limits.max_steps)

    def _halted(self, reason: str, error_type: str) -> TaskHalted:
        return TaskHalted(reason, error_type=error_type, task_id=self.env.task_id)

    async def start(self) -> None:
        """Count the step against the task's and the agent's step budgets: reserved with the step's first
        call, in the same round trip (halts are checked there too); a step that makes no call at all is
        counted when it ends (``spent``).

        A step that carries on after a person decided on a call it proposed was counted when it began.
        """
        self._step = Amount(steps=0 if self.env.resume is not None else 1)

    def _with_step(self, amount: Amount) -> tuple[Amount, Amount]:
        """``amount`` plus the step's count if it is not reserved yet, and what was added."""
        carried, self._step = self._step or Amount(), None
        total = Amount(amount.tokens + carried.tokens, amount.cost_usd + carried.cost_usd, amount.steps + carried.steps)
        return total, carried

    async def before_model_call(self, index: int, model: str, prompt_tokens: int, prompt: str | None = None) -> Ticket:
        """Check and reserve for model call ``index`` of this step: ``prompt_tokens`` (as the prompt's
        assembly counted them, ``handrail.context.Prompt.tokens_for``) and the most the reply may take;
        ``prompt`` is the version the call is made with, for its event."""
        self._check_wall_clock()
        estimate, carried = self._with_step(Amount(tokens=prompt_tokens + self.agent.limits.max_output_tokens))
        reservation_id = f"{self.env.message_id}/{index}/model_call"
        # An open model breaker is the chain's business (it fails over); an open agent breaker stops the task.
        admitted = await self._admit(reservation_id, estimate, breaker=("agent", self.agent.name), carried=carried)
        if admitted.outcome == Admit.BREAKER_OPEN:
            await self._emit_stop("model_call", model, None, "halted", "agent_breaker_open")
            raise self._halted(f"the agent breaker of {self.agent.name!r} is open", "agent_breaker_open")
        if admitted.outcome == Admit.REFUSED:
            await self._emit_stop("model_call", model, None, "halted", self._refusal(admitted))
        self._raise_unless_granted(admitted)
        return Ticket(reservation_id, "model_call", model, None, time.perf_counter(), carried, prompt)

    async def before_tool_call(
        self, index: int, spec: ToolSpec, args_hash: str, *, retry: bool = False
    ) -> Ticket | ToolCallError:
        """Check and reserve for a tool call; an open tool breaker is an error the model sees.

        A ``retry`` (the platform trying a failed call again) is reserved and checked like any call but
        not counted in the loop window: that counts what the model asks for.
        """
        self._check_wall_clock()
        limits = self.agent.limits
        loop = None
        if not retry:
            loop = LoopWindow(
                spec.name, args_hash, f"{self.env.message_id}/{index}", limits.loop_window_s, limits.loop_max_repeats
            )
        reservation_id = f"{self.env.message_id}/{index}/tool_call"
        amount, carried = self._with_step(Amount(cost_usd=spec.cost_usd))
        admitted = await self._admit(reservation_id, amount, breaker=("tool", spec.name), loop=loop, carried=carried)
        if admitted.outcome == Admit.LOOP_DETECTED:
            await self._emit_stop("tool_call", spec.name, args_hash, "halted", "loop_detected")
            raise self._halted(
                f"loop detected: {spec.name} called {admitted.repeats} times with the same arguments within "
                f"{limits.loop_window_s:g}s (limit {limits.loop_max_repeats})",
                "loop_detected",
            )
        if admitted.outcome == Admit.SHORT_CIRCUITED:
            await self._emit_stop("tool_call", spec.name, args_hash, "short_circuited", "tool_breaker_open")
            return ToolCallError(
                "tool_unavailable", spec.name, f"{spec.name} is failing and its breaker is open; try later"
            )
        if admitted.outcome == Admit.REFUSED:
            await self._emit_stop("tool_call", spec.name, args_hash, "halted", self._refusal(admitted))
        self._raise_unless_granted(admitted)
        return Ticket(reservation_id, "tool_call", spec.name, args_hash, time.perf_counter(), carried)

    async def _admit(
        self,
        reservation_id: str,
        amount: Amount,
        *,
        breaker: tuple[str, str] | None = None,
        loop: LoopWindow | None = None,
        carried: Amount | None = None,
    ) -> Admission:
        """Admit a call (``Admissions.admit``); what stops it before any reservation is taken leaves the step's
        own count (``carried``) to the next call."""
        settle, self._unsettled = self._unsettled, None
        try:
            admitted = await self.admissions.admit(
                self.env.task_id,
                self.agent.name,
                reservation_id,
                amount,
                self.agent_caps,
                _now_ms(),
                breaker=breaker,
                loop=loop,
                settle=settle,
            )
        except RetryableError:
            raise  # the admission settled it alone before giving up
        except Exception:
            self._unsettled = settle
            raise
        if admitted.outcome == Admit.HALTED:
            raise self._operator_halt(admitted.halt)
        if carried is not None and admitted.outcome == Admit.SHORT_CIRCUITED:
            self._step = carried  # nothing was reserved and the step goes on: its next call carries the count
        return admitted

    def _operator_halt(self, halt: Halt | None) -> TaskHalted:
        assert halt is not None
        if halt.error_type:  # e.g. behaviour_deviation: the circuit-breaker found the task unlike its agent
            return self._halted(halt.reason, halt.error_type)
        return self._halted(halt.reason, "halted_by_operator" if halt.by.startswith("operator") else "halted")

    @staticmethod
    def _refusal(admitted: Admission) -> str:
        return _error_type(admitted.reservation.verdict if admitted.reservation else Verdict.EXHAUSTED)

    async def after_call(
        self,
        ticket: Ticket,
        outcome: str,
        error_type: str | None = None,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """Settle the reservation with what the call used, and emit its decision event."""
        carried = ticket.carried  # the step's count, reserved with this call, stays spent
        actual = Amount(tokens=input_tokens + output_tokens, cost_usd=cost_usd, steps=carried.steps)
        await self.settle_pending()  # a call that never asked for the next admission (should not happen)
        self._unsettled = Settlement(ticket.reservation_id, actual, self.agent.name)
        called = labels.call(ticket.kind, ticket.name)
        CALL_SECONDS.labels(ticket.kind, called, outcome).observe(time.perf_counter() - ticket.started)
        if ticket.kind == "model_call":
            MODEL_TOKENS.labels(self.agent.name, called, "input").inc(input_tokens)
            MODEL_TOKENS.labels(self.agent.name, called, "output").inc(output_tokens)
            MODEL_COST_USD.labels(self.agent.name, called).inc(cost_usd)
        await self.events.emit(
            self._event(
                ticket.kind,
                ticket.name,
                ticket.args_hash,
                outcome,
                error_type,
                (time.perf_counter() - ticket.started) * 1000,
                input_tokens,
                output_tokens,
                cost_usd,
                ticket.reservation_id,
                ticket.prompt,
            )
        )

    async def settle_pending(self) -> None:
        """Settle the last call's spend if nothing has yet (the step ended on an error or a halt)."""
        pending, self._unsettled = self._unsettled, None
        if pending is not None:
            await self.budgets.settle(self.env.task_id, pending.reservation_id, pending.actual, pending.agent)

    async def spent(self) -> Usage:
        """Settle the last call and read what the task has spent: one round trip at the end of the step
        (two for a step that made no call: its own count is admitted first)."""
        if self._step is not None and self._step.steps:
            reservation_id = f"{self.env.message_id}/step"
            step, self._step = self._step, None
            self._raise_unless_granted(await self._admit(reservation_id, step))
            self._unsettled = Settlement(reservation_id, step, self.agent.name)
        pending, self._unsettled = self._unsettled, None
        return await self.budgets.settle_and_usage(self.env.task_id, pending)

    def _raise_unless_granted(self, admitted: Admission) -> None:
        reservation = admitted.reservation
        if reservation is not None and not reservation.ok:
            raise self._halted(
                f"halted before the call that would break a limit: {reservation.describe()}",
                _error_type(reservation.verdict),
            )

    def _check_wall_clock(self) -> None:
        elapsed_s = time.monotonic() - self.started
        if elapsed_s > self.agent.limits.deadline_s:
            raise self._halted(
                f"step {self.env.step!r} ran {elapsed_s:.1f}s, past agent {self.agent.name!r}'s "
                f"{self.agent.limits.deadline_s:g}s limit",
                "step_deadline_exceeded",
            )

    async def _emit_stop(self, kind: str, name: str, args_hash: str | None, outcome: str, error_type: str) -> None:
        await self.events.emit(self._event(kind, name, args_hash, outcome, error_type, 0.0, 0, 0, 0.0, f"stop/{name}"))

    def _event(
        self,
        kind: str,
        name: str,
        args_hash: str | None,
        outcome: str,
        error_type: str | None,
        latency_ms: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        call_id: str,
        prompt: str | None = None,
    ) -> DecisionEvent:
        return DecisionEvent(
            message_id=derived_message_id(self.env.message_id, f"event/{call_id}/{outcome}"),
            task_id=self.env.task_id,
            workflow=self.env.workflow,
            step=self.env.step,
            agent=self.agent.name,
            kind=kind,
            name=name,
            args_hash=args_hash,
            outcome=outcome,
            error_type=error_type,
            latency_ms=round(latency_ms, 3),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            prompt=prompt,
            at=utcnow(),
        )


def _error_type(verdict: Verdict) -> str:
    return {
        Verdict.EXHAUSTED: "budget_exhausted",
        Verdict.DEADLINE: "deadline_exceeded",
        Verdict.UNKNOWN_TASK: "unknown_task",
    }.get(verdict, "halted")
