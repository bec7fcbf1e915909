"""One tool call within its policy: attempts with back-off, and what each kind of failure leads to.

Every attempt is admitted and reserved by the step's guard like a call of its own
(halts, breakers, the budget, the step's deadline), settled and emitted as a
decision event; only the first counts towards the loop window, since a retry is
the platform's, not the model's. A transient failure is tried again after the
tool's back-off (``handrail.backoff``) until its attempts run out; what the
other kinds do is ``handrail.tools.kinds``. A side effect whose outcome is in doubt
(it timed out, or raised something other than ``ToolFailure``) is never tried again:
the step halts ``side_effect_in_doubt`` and a person checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from handrail.contracts.tools import ToolPolicy
from handrail.errors import TaskHalted
from handrail.metrics import TOOL_FAILURES, TOOL_RETRIES, labels
from handrail.tools import ToolCallError, ToolErrorKind, ToolFailure, ToolHalted, ToolOutcomeUnknown, ToolSpec
from handrail.tools.kinds import ATTEMPT_ERROR_TYPES, TIMEOUT_ERROR_TYPE, ToolStepFailed
from handrail_worker.guard import Ticket

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class ToolGuard(Protocol):
    """The part of the step's guard a tool call goes through (``handrail_worker.guard.StepGuard``)."""

    async def before_tool_call(
        self, index: int, spec: ToolSpec, args_hash: str, *, retry: bool = False
    ) -> Ticket | ToolCallError: ...
    async def after_call(
        self,
        ticket: Ticket,
        outcome: str,
        error_type: str | None = None,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None: ...


@dataclass(frozen=True)
class Ran:
    """The tool answered: its result, and the attempt's ticket (settled by the caller once it checked it)."""

    ticket: Ticket
    result: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class GaveUp:
    """The call failed in a way the model is told about (transient after its retries, or invalid input)."""

    error: ToolCallError
    #: The last attempt's (``tool_transient``, ``tool_timeout``, ``tool_invalid_input``: a correction).
    error_type: str
    attempts: int


@dataclass(frozen=True)
class ToolCallAttempts:
    """Runs one granted tool call of a step, retrying it as its policy says."""

    guard: ToolGuard
    next_index: Callable[[], int]
    agent: str
    task_id: str
    sleep: Sleep = asyncio.sleep

    async def run(
        self,
        index: int,
        spec: ToolSpec,
        args_hash: str,
        policy: ToolPolicy,
        call: Callable[[], Awaitable[dict[str, Any]]],
    ) -> Ran | GaveUp | ToolCallError:
        """``Ran``, ``GaveUp``, or the guard's ``ToolCallError`` when a breaker short-circuited an attempt.

        Raises ``ToolStepFailed`` / ``ToolHalted`` for a permanent or auth failure (the tool's policy says
        which), ``TaskHalted`` for a side effect in doubt or a limit the guard enforces.
        """
        backoff = policy.backoff()
        began = time.monotonic()
        attempt = 1
        while True:
            if attempt == 1:
                granted = await self.guard.before_tool_call(index, spec, args_hash)
            else:
                granted = await self.guard.before_tool_call(index, spec, args_hash, retry=True)
            if isinstance(granted, ToolCallError):
                return granted
            try:
                result = await call()
            except (ToolFailure, ToolOutcomeUnknown) as exc:
                kind, in_doubt = exc.kind, isinstance(exc, ToolOutcomeUnknown) and spec.side_effect
                timed_out = isinstance(exc, ToolOutcomeUnknown) and exc.timed_out
                error_type = TIMEOUT_ERROR_TYPE if timed_out else ATTEMPT_ERROR_TYPES[kind]
                # It was called: it is paid for, like any call (and the breakers count it).
                await self.guard.after_call(granted, "error", error_type, cost_usd=spec.cost_usd)
                TOOL_FAILURES.labels(self.agent, labels.tool(spec.name), kind.value).inc()
                delay_s = None
                if kind == ToolErrorKind.TRANSIENT and not in_doubt:
                    delay_s = backoff.next_delay_s(attempt, time.monotonic() - began)
                if delay_s is None:
                    return self._give_up(spec, policy, exc, error_type, attempt, in_doubt)
                TOOL_RETRIES.labels(self.agent, labels.tool(spec.name)).inc()
                log.info(
                    "task %s: %s failed (%s, attempt %d of %d): %s; again in %.3fs",
                    *(self.task_id, spec.name, error_type, attempt, policy.max_attempts, exc, delay_s),
                )
                await self.sleep(delay_s)
                attempt += 1
                index = self.next_index()  # a reservation of its own
                continue
            return Ran(granted, result, attempt)

    def _give_up(
        self,
        spec: ToolSpec,
        policy: ToolPolicy,
        exc: ToolFailure | ToolOutcomeUnknown,
        error_type: str,
        attempts: int,
        in_doubt: bool,
    ) -> GaveUp:
        """What a failure that is not tried again leads to: the one place kinds map to outcomes."""
        name, kind = spec.name, exc.kind
        if in_doubt:
            raise TaskHalted(
                f"{name} may or may not have run ({error_type}: {exc}); a side effect in doubt is never "
                "repeated: a person must check",
                error_type="side_effect_in_doubt",
                task_id=self.task_id,
            )
        if kind in (ToolErrorKind.TRANSIENT, ToolErrorKind.INVALID_INPUT):
            tried = f" (after {attempts} attempts)" if attempts > 1 else ""
            error = ToolCallError("tool_failed", name, f"{exc}{tried}", kind=kind, attempts=attempts)
            return GaveUp(error, error_type, attempts)
        if kind == ToolErrorKind.AUTH:
            # The alert: handrail_tool_failures_total{kind="auth"} (HandrailToolAuthFailures) and the decision
            # event with error_type tool_auth on <prefix>events, already sent; this line is for whoever reads logs.
            log.error("task %s: tool %s refused its credentials (agent %s): %s", self.task_id, name, self.agent, exc)
        action = policy.on_auth if kind == ToolErrorKind.AUTH else policy.on_permanent
        reason = f"tool {name!r} failed ({kind.value}): {exc}"
        if action == "halt":
            raise ToolHalted(reason, kind=kind, task_id=self.task_id)
        raise ToolStepFailed(reason, kind=kind, task_id=self.task_id)
