"""What kind of failure a tool call met, and what each kind leads to.

Retryability belongs to the error (STYLE 5): a tool raises ``ToolFailure`` with
its ``kind``; anything else it raises, and a call past its timeout, is turned
into ``ToolOutcomeUnknown`` here (``bounded``), because then nobody knows what
the tool did. ``handrail_worker.tool_attempts`` maps each kind to one outcome:

    kind            retried                 then
    transient       yes, with back-off      a structured error to the model (``tool_failed``, ``kind``)
    invalid_input   no                      a structured error to the model; counts as a correction
    permanent       no                      the step fails (dead letter, task ``failed``) or halts
    auth            no                      an alert (metric, event), and the step halts or fails

A side effect is retried only after a ``ToolFailure``, which declares it did nothing;
after ``ToolOutcomeUnknown`` its outcome is in doubt and it is never repeated.

    HandrailError
    ├── Rejected
    │   └── ToolStepFailed        a permanent or auth failure fails the step (``tool_permanent_failure``,
    │                             ``tool_auth_failed``)
    └── TaskHalted
        └── ToolHalted            the same, for a tool whose policy says ``halt``: a person may decide
    Exception
    └── ToolOutcomeUnknown        the tool raised something else, or timed out: what it did is unknown
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from handrail.errors import HandrailError, Rejected, TaskHalted

if TYPE_CHECKING:
    from handrail.tools.registry import Tool, ToolContext


class ToolErrorKind(StrEnum):
    """What kind of failure a tool call met (``ToolFailure.kind``)."""

    TRANSIENT = "transient"  # the target is struggling (5xx, a timeout, a dropped connection): worth another try
    INVALID_INPUT = "invalid_input"  # these arguments cannot succeed (no such employee): the model can fix them
    PERMANENT = "permanent"  # no arguments would succeed now (the target refuses, the tool is broken)
    AUTH = "auth"  # the tool's credentials were refused: someone must fix them


#: The ``error_type`` of a failed attempt's decision event, per kind (bounded: handrail.metrics.labels).
ATTEMPT_ERROR_TYPES = {kind: f"tool_{kind.value}" for kind in ToolErrorKind}
#: A failed attempt that ran out of time (a transient failure of its own name).
TIMEOUT_ERROR_TYPE = "tool_timeout"
#: How a task ends when a permanent or an auth failure stops its step.
ENDING_ERROR_TYPES = {ToolErrorKind.PERMANENT: "tool_permanent_failure", ToolErrorKind.AUTH: "tool_auth_failed"}


class ToolOutcomeUnknown(Exception):
    """The tool raised something other than ``ToolFailure``, or did not answer within its timeout.

    It may have done its work or not: a side effect is never repeated after this (its claim stays
    in doubt, see ``handrail.state.effects``). A timeout is ``transient``, anything else ``permanent``.
    """

    def __init__(self, message: str, *, kind: ToolErrorKind, timed_out: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.timed_out = timed_out


class ToolStepFailed(Rejected):
    """A tool's permanent or auth failure fails the step: dead-lettered (replayable once fixed), the task fails."""

    def __init__(self, reason: str, *, kind: ToolErrorKind, task_id: str | None = None) -> None:
        super().__init__(reason, task_id=task_id)
        self.error_type = ENDING_ERROR_TYPES[kind]


class ToolHalted(TaskHalted):
    """A tool's permanent or auth failure halts the task (the tool's policy says ``halt``): a person may decide."""

    def __init__(self, reason: str, *, kind: ToolErrorKind, task_id: str | None = None) -> None:
        super().__init__(reason, error_type=ENDING_ERROR_TYPES[kind], task_id=task_id)


def bounded(tool: Tool, timeout_s: float) -> Tool:
    """``tool`` with its run limited to ``timeout_s``, and what it raises besides ``ToolFailure`` (and
    Handrail's own errors) turned into ``ToolOutcomeUnknown``."""
    from handrail.tools.registry import ToolFailure

    run = tool.run

    async def bounded_run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout_s):
                return await run(args, ctx)
        except (ToolFailure, ToolOutcomeUnknown, HandrailError):
            raise  # classified by the tool itself (an MCP server that never answered, say)
        except TimeoutError:
            raise ToolOutcomeUnknown(
                f"no answer within {timeout_s:g}s", kind=ToolErrorKind.TRANSIENT, timed_out=True
            ) from None
        except Exception as exc:  # a bug in the tool, or an error it did not classify: it may have acted
            raise ToolOutcomeUnknown(f"{type(exc).__name__}: {exc}", kind=ToolErrorKind.PERMANENT) from exc

    return replace(tool, run=bounded_run)
