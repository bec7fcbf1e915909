"""The task console's HTTP API and its page at ``/console``, beside the reviewers' (same tokens, same errors).

- ``GET /api/tasks``: task summaries, the latest opened first, filtered and paged by cursor
- ``GET /api/tasks/{task_id}``: one task's summary, its timeline and a link to its trace
- ``GET /api/dead-letters``: dead letters with their reasons, the latest first, paged by cursor

Pages come from the task index (``tasks_index``), never from a read of the topics per request.
"""

from __future__ import annotations

import asyncio
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from handrail.errors import ContractError
from handrail_review.api import _errors, _InvalidQuery, _refuse_repeated, current_reviewer
from handrail_review.errors import NotReady, ReviewError
from handrail_review.hardening import content_security_policy
from handrail_review.reviewers import Reviewer
from handrail_review.tasks_index import Cursor, DeadLetterFilter, TaskFilter, TaskIndex
from handrail_review.timeline import STATUSES

#: How long a request waits for the task index to catch up with Kafka after a start before answering 503.
_READY_WAIT_S = 10.0
#: A cursor as ``tasks_index.Cursor`` spells it: what the document says is exactly what is taken.
CURSOR_PATTERN = r"^[0-9]{1,16}:"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
#: What a trace URL template may name.
_TRACE_FIELDS = frozenset({"trace_id", "task_id"})

Status = Literal["running", "in_review", "completed", "rejected", "halted", "failed"]
assert set(Status.__args__) == set(STATUSES)  # type: ignore[attr-defined]  # one list, two spellings


@dataclass(frozen=True)
class Console:
    """What the console serves from: the index, whether it has caught up, and how a trace link is made."""

    index: TaskIndex
    ready: asyncio.Event
    trace_url_template: str | None = None

    def __post_init__(self) -> None:
        if self.trace_url_template is not None:
            names = {name for _, name, _, _ in string.Formatter().parse(self.trace_url_template) if name is not None}
            if not names <= _TRACE_FIELDS:
                raise ContractError(
                    f"HANDRAIL_TRACE_URL_TEMPLATE may name {{trace_id}} and {{task_id}} only, not "
                    f"{', '.join(sorted(names - _TRACE_FIELDS))}"
                )

    def trace_url(self, task_id: str, trace_id: str | None) -> str | None:
        """The task's trace in the tracing UI; None without a template, or when it needs a trace id not known."""
        template = self.trace_url_template
        if not template or ("{trace_id}" in template and not trace_id):
            return None
        return template.format(trace_id=quote(trace_id or "", safe=""), task_id=quote(task_id, safe=""))


class TaskSummary(BaseModel):
    """One task as the console lists it."""

    task_id: str
    status: Status | None = Field(description="None while only records that say nothing of it were read.")
    workflow: str | None
    agents: list[str] = Field(description="The agents whose steps were recorded, in order of their first step.")
    opened_at: datetime
    ended_at: datetime | None
    updated_at: datetime = Field(description="When the latest record of the task was written.")
    steps: int
    tokens: int
    cost_usd: float
    reason: str | None = Field(description="The reason of the latest record that gave one.")
    dead_letters: int
    trace_id: str | None = Field(description="The W3C trace id the task's records carried.")


class TaskPage(BaseModel):
    tasks: list[TaskSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; none when there is no more.")
    total: int | None = Field(description="How many tasks match, when that is cheap (at most one of status, "
                              "workflow, agent, and no `q`); else none.")  # fmt: skip


class TimelineEntry(BaseModel):
    """One decision on the task: a hop (its patch, model and tool calls), budget, review, halt, end, dead letter."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["hop", "budget", "review", "halt", "task", "dead_letter", "other"]
    at: datetime
    action: str
    actor: str
    seq: int | None = None
    step: str | None = None
    reason: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="The record's details: a hop's `patch` and `decisions`, a grant's `top_up`, a review's "
        "`review_id` and `approvals`... A value too large is replaced by `{truncated, bytes}`.",
    )


class TaskDetail(TaskSummary):
    timeline: list[TimelineEntry] = Field(description="Oldest first; at most the latest entries kept.")
    timeline_dropped: int = Field(description="Older entries no longer kept (the audit topic has them all).")
    trace_url: str | None = Field(description="The task's trace, from HANDRAIL_TRACE_URL_TEMPLATE.")


class DeadLetterSummary(BaseModel):
    message_id: str
    task_id: str | None
    reason: str
    error_type: str
    source_topic: str
    partition: int
    offset: int
    service: str
    dead_lettered_at: datetime
    original_size: int | None = None


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetterSummary]
    next_cursor: str | None
    total: int | None = Field(description="How many match, when that is cheap (no filter but time); else none.")


def _rfc3339(value: object) -> object:
    """A time as the document says (``format: date-time``, RFC 3339), not whatever else pydantic would take for
    one (a number of seconds, a date alone)."""
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("a date-time with its zone, RFC 3339: e.g. 2026-12-01T09:00:00Z")
    return value


Instant = Annotated[datetime, BeforeValidator(_rfc3339)]


class _Paged(BaseModel):
    """Time bounds, a cursor and a page size; an unknown parameter is an error."""

    model_config = ConfigDict(extra="forbid")

    since: Instant | None = Field(default=None, description="Opened (dead-lettered) at or after this time.")
    until: Instant | None = Field(default=None, description="Opened (dead-lettered) at or before this time.")
    q: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Text: a task id prefix, or words in the reason (or the workflow). Checked on the summaries "
        "a page reads (at most 5000), not a full-text index.",
    )
    cursor: str | None = Field(
        default=None,
        max_length=600,
        pattern=CURSOR_PATTERN,
        description="The previous page's `next_cursor`, as it was returned.",
    )
    limit: int = Field(default=50, ge=1, le=200)

    @model_validator(mode="after")
    def _bounds_can_overlap(self) -> _Paged:
        # A time without a zone is UTC (first: an aware and a naive time cannot be compared).
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                setattr(self, name, moment.replace(tzinfo=UTC))
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since ({self.since.isoformat()}) is after until ({self.until.isoformat()})")
        return self

    def span_ms(self) -> tuple[int | None, int | None]:
        return _ms(self.since), _ms(self.until)

    def decoded_cursor(self) -> Cursor | None:
        if self.cursor is None:
            return None
        try:
            return Cursor.decode(self.cursor)
        except ValueError as exc:
            raise _InvalidQuery(f"query.cursor: {exc}") from None


class TaskQuery(_Paged):
    status: Status | None = Field(default=None, description="Only tasks in this status.")
    workflow: str | None = Field(default=None, min_length=1, max_length=200, description="Only this workflow.")
    agent: str | None = Field(
        default=None, min_length=1, max_length=200, description="Tasks this agent took a step of."
    )


class DeadLetterQuery(_Paged):
    error_type: str | None = Field(default=None, min_length=1, max_length=200, description="Only this error type.")
    task_id: str | None = Field(default=None, min_length=1, max_length=400, description="Only this task's.")


class _TaskNotFound(ReviewError):
    status = 404
    code = "not_found"


async def console_reader(request: Request, who: Annotated[Reviewer, Depends(current_reviewer)]) -> Reviewer:
    """Any reviewer's token, once the task index has caught up with Kafka (503 until then)."""
    console: Console = request.app.state.console
    try:
        await asyncio.wait_for(console.ready.wait(), _READY_WAIT_S)
    except TimeoutError:
        raise NotReady("the task index is still being read from Kafka; try again shortly") from None
    return who


Reader = Annotated[Reviewer, Depends(console_reader)]


def add_console(api: FastAPI, console: Console) -> None:
    """The console's routes and page on ``api`` (built by ``handrail_review.api.build_api``)."""
    page = resources.files("handrail_review").joinpath("static/console.html").read_text()
    page_policy = {"Content-Security-Policy": content_security_policy(page)}

    api.state.console = console

    @api.get("/console", response_class=HTMLResponse, include_in_schema=False)
    async def console_page() -> HTMLResponse:
        return HTMLResponse(page, headers=page_policy)

    @api.get("/api/tasks", response_model=TaskPage, summary="List tasks", tags=["console"], responses=_errors(422))
    async def list_tasks(request: Request, who: Reader, query: Annotated[TaskQuery, Query()]) -> TaskPage:
        """Tasks, the latest opened first, filtered; page on with `next_cursor`."""
        _refuse_repeated(request)
        since_ms, until_ms = query.span_ms()
        where = TaskFilter(query.status, query.workflow, query.agent, since_ms, until_ms, query.q)
        found = await console.index.tasks(where, query.decoded_cursor(), query.limit)
        return TaskPage(tasks=[_summary(s) for s in found.items], next_cursor=found.next_cursor, total=found.total)

    @api.get(
        "/api/tasks/{task_id}",
        response_model=TaskDetail,
        summary="Show one task: its timeline and trace",
        tags=["console"],
        responses=_errors(404),
    )
    async def show_task(task_id: str, who: Reader) -> TaskDetail:
        summary = await console.index.summary(task_id)
        if summary is None:
            raise _TaskNotFound(f"no task {task_id!r} in the console's index (never seen, or expired)")
        entries = await console.index.timeline(task_id)
        listed = _summary(summary)
        return TaskDetail(
            **listed.model_dump(),
            timeline=[TimelineEntry.model_validate(e) for e in entries],
            timeline_dropped=int(summary.get("timeline_dropped") or 0),
            trace_url=console.trace_url(task_id, listed.trace_id),
        )

    @api.get(
        "/api/dead-letters",
        response_model=DeadLetterPage,
        summary="List dead letters",
        tags=["console"],
        responses=_errors(422),
    )
    async def list_dead_letters(
        request: Request, who: Reader, query: Annotated[DeadLetterQuery, Query()]
    ) -> DeadLetterPage:
        """Dead letters and why, the latest first (`handrail dlq replay` sends one on again)."""
        _refuse_repeated(request)
        since_ms, until_ms = query.span_ms()
        where = DeadLetterFilter(query.error_type, query.task_id, since_ms, until_ms, query.q)
        found = await console.index.dead_letters(where, query.decoded_cursor(), query.limit)
        return DeadLetterPage(
            dead_letters=[DeadLetterSummary.model_validate(d) for d in found.items],
            next_cursor=found.next_cursor,
            total=found.total,
        )


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def _at(ms: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(ms) / 1000, UTC) if ms else None


def _summary(raw: dict[str, str]) -> TaskSummary:
    opened = _at(raw.get("opened_ms")) or datetime.fromtimestamp(0, UTC)
    return TaskSummary(
        task_id=raw["task_id"],
        status=raw.get("status") or None,  # only the index writes it, from STATUSES
        workflow=raw.get("workflow") or None,
        agents=raw.get("agents", "").split(),
        opened_at=opened,
        ended_at=_at(raw.get("ended_ms")),
        updated_at=_at(raw.get("updated_ms")) or opened,
        steps=int(raw.get("steps") or 0),
        tokens=int(raw.get("tokens") or 0),
        cost_usd=round(float(raw.get("cost_usd") or 0), 6),
        reason=raw.get("reason") or None,
        dead_letters=int(raw.get("dead_letters") or 0),
        trace_id=raw.get("trace_id") or None,
    )
