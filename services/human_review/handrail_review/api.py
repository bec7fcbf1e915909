"""The reviewers' HTTP API (OpenAPI at ``/api/openapi.json``, docs at ``/api/docs``) and the web page at ``/``;
the deployment's Kafka topics as AsyncAPI at ``/api/asyncapi.json``. The task console's routes and its page
(``/console``) are added by ``console_api``, under the same tokens and errors.

Every ``/api`` call but the page and the two documents needs ``Authorization: Bearer <token>``. Errors
are JSON: ``{"error": "<code>", "detail": "<for a person>"}`` with 401, 403,
404, 409, 422 or 503.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import aclosing
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal

import jsonpatch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict, JsonValue
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path

from handrail.errors import RetryableError
from handrail.messages import (
    BudgetSnapshot,
    BudgetTopUp,
    Decision,
    ProposedCall,
    ReviewAction,
    ReviewDecided,
    ReviewTrigger,
)
from handrail_review.errors import NotAuthenticated, NotReady, ReviewError
from handrail_review.handlers import ReviewDesk
from handrail_review.hardening import BodyLimit, SecurityHeaders, content_security_policy
from handrail_review.index import Item, ReviewIndex
from handrail_review.reviewers import Reviewer

#: How long a request waits for the index to be rebuilt after a start before answering 503.
_READY_WAIT_S = 10.0
#: How many decided reviews the history lists when the request does not say: a screenful.
_HISTORY_LIMIT = 50
#: How far back a filtered history looks at most: bounds one request's reads (the index keeps a month).
_HISTORY_SCAN_MAX = 2000


class ErrorBody(BaseModel):
    """Every error: a code for programs, a sentence for people."""

    error: str = Field(description="unauthenticated, forbidden, not_found, already_decided, unchanged, ...")
    detail: str = Field(description="What is wrong, for a person.")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error responses a route declares in the OpenAPI document (401 and 503 apply to every route)."""
    meaning = {
        400: "The request body is not JSON (or not UTF-8).",
        401: "No token, or an unknown one.",
        403: "The caller's roles may not decide this review.",
        404: "No such review.",
        409: "Already decided, escalated meanwhile, or nothing to change (`unchanged`).",
        413: "The request body, or the edit it makes, is over its size limit.",
        422: "The request body or a parameter is invalid.",
        503: "The index is being rebuilt from Kafka, or Redis is away: try again (Retry-After).",
    }
    return {code: {"model": ErrorBody, "description": meaning[code]} for code in sorted({401, 503, *codes})}


class Me(BaseModel):
    id: str
    name: str
    roles: list[str]


class ApprovalsReset(BaseModel):
    """An edit changed what is approved, so the approvals given before it no longer count."""

    by: str = Field(description="Who edited the context.")
    at: datetime
    dropped: list[str] = Field(description="Whose approvals were dropped; they must approve again.")
    reason: str


class ReviewSummary(BaseModel):
    """One review in the queue."""

    review_id: str
    task_id: str
    workflow: str
    step: str
    agent: str
    reason: str
    trigger: str
    rule: str | None
    proposed_tool: str | None = Field(
        default=None,
        description="The tool of the call waiting for this review, if it is a proposed call "
        "(the call itself is the review's `proposal`); none for a review of a step or a halt.",
    )
    role: str = Field(description="The lowest role that may decide.")
    level: int = Field(description="How many times a timeout escalated it.")
    status: Literal["pending", "approved", "rejected"]
    approvals: list[str]
    approvals_required: int
    requested_at: datetime
    deadline: datetime
    age_s: float
    decided_by: str | None = None
    decided_at: datetime | None = Field(default=None, description="When it was decided.")
    decision_reason: str | None = Field(default=None, description="The deciding reviewer's reason, if any.")
    outcome: str | None = Field(default=None, description="What the decision did: `completed`, `handoff:<step>`, ...")
    approvals_reset: ApprovalsReset | None = Field(
        default=None, description="The last edit that dropped approvals, if any: whose, by whom, why."
    )


class ReviewFilters(BaseModel):
    """The query of ``GET /api/reviews``: every filter given must hold. An unknown parameter is an error."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["pending", "decided"] = Field(
        default="pending", description="The queue (soonest deadline first), or the history (latest decision first)."
    )
    workflow: str | None = Field(default=None, min_length=1, description="Only this workflow.")
    rule: str | None = Field(default=None, min_length=1, description="Only reviews this escalation rule asked for.")
    role: str | None = Field(
        default=None, min_length=1, description="Only reviews whose current role (after any escalation) is this."
    )
    reason: str | None = Field(default=None, min_length=1, description="Reviews whose reason contains this text.")
    trigger: ReviewTrigger | None = Field(default=None, description="Only reviews raised this way.")
    min_age_s: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Requested at least this long ago."
    )
    max_age_s: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Requested at most this long ago."
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        le=500,
        description=f"At most this many; by default every pending one, the {_HISTORY_LIMIT} latest decided.",
    )

    @model_validator(mode="after")
    def _ages_can_overlap(self) -> ReviewFilters:
        if self.min_age_s is not None and self.max_age_s is not None and self.min_age_s > self.max_age_s:
            raise ValueError(
                f"min_age_s ({self.min_age_s:g}) is above max_age_s ({self.max_age_s:g}): nothing can match"
            )
        return self

    def matches(self, review: ReviewSummary) -> bool:
        return (
            (self.workflow is None or review.workflow == self.workflow)
            and (self.rule is None or review.rule == self.rule)
            and (self.role is None or review.role == self.role)
            and (self.reason is None or self.reason.lower() in review.reason.lower())
            and (self.trigger is None or review.trigger == self.trigger.value)
            and (self.min_age_s is None or review.age_s >= self.min_age_s)
            and (self.max_age_s is None or review.age_s <= self.max_age_s)
        )


class ReviewDetail(ReviewSummary):
    """One review with everything needed to decide it."""

    context: dict[str, Any] = Field(description="The task's context at the checkpoint.")
    context_hash: str
    diff: list[dict[str, Any]] = Field(description="JSON Patch from the previous step's context to this one.")
    output: dict[str, Any] | None = Field(description="The step's output under review (none for a halt).")
    decisions: list[Decision] = Field(description="The step's decision trail: every model and tool call.")
    budget: BudgetSnapshot = Field(description="What the task had used at the checkpoint, and its caps.")
    halt_error_type: str | None
    proposal: ProposedCall | None = Field(
        default=None,
        description="A call the model proposed that waits for this review before it runs: tool, arguments, "
        "the model's stated reason, and what a rejection does (an edit applies to its arguments).",
    )
    edit: list[dict[str, Any]] | None = Field(description="The pending or applied edit, as a JSON Patch.")
    arguments: dict[str, Any] | None = Field(
        default=None,
        description="For a proposed call: the arguments it runs with if approved now (any pending edit applied).",
    )
    top_up: BudgetTopUp | None = Field(
        default=None, description="The budget approving this halt grants (pending or applied)."
    )
    records: list[ReviewDecided] = Field(description="Approvals, comments and the decision, oldest first.")
    may_decide: bool = Field(description="Whether the caller's roles may decide it.")


class _Body(BaseModel):
    """A request body: a field it does not have is refused (422 naming it), never silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _exactly_one_of(*fields: str) -> JsonDict:
    """A JSON Schema ``oneOf``: one of ``fields`` is sent and not null, the others absent or null."""
    branches: list[JsonValue] = []
    for sent in fields:
        properties: JsonDict = {f: {"not": {"type": "null"}} if f == sent else {"type": "null"} for f in fields}
        branches.append({"required": [sent], "properties": properties})
    return {"oneOf": branches}


class DecisionBody(_Body):
    reason: str | None = Field(default=None, max_length=2000)
    top_up: BudgetTopUp | None = Field(
        default=None,
        description="Approving a halt: more budget for the task, within the workflow's max_top_up (all top-ups "
        "of the task together) and your role's bound; audited. A different top-up restarts the approvals.",
    )


class RejectBody(_Body):
    reason: str = Field(min_length=1, max_length=2000)


class EditBody(_Body):
    """Edit-and-approve: the whole new context, or a JSON Patch against the checkpoint's context.

    For a review of a proposed call, what is edited is the call's arguments: send the whole new
    ``arguments`` (or a ``patch`` against them); they are checked against the tool's schema.
    Exactly one of the three is sent (the document says so with ``oneOf``).
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_exactly_one_of("context", "arguments", "patch"))

    context: dict[str, Any] | None = None
    arguments: dict[str, Any] | None = Field(default=None, description="A proposed call's new arguments.")
    patch: list[dict[str, Any]] | None = None
    reason: str | None = Field(default=None, max_length=2000)


class CommentBody(_Body):
    text: str = Field(min_length=1, max_length=4000)


_bearer = HTTPBearer(auto_error=False, description="A reviewer token (config/reviewers.yaml).")


async def current_reviewer(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Reviewer:
    """The reviewer the bearer token belongs to (401 otherwise), once the index is rebuilt (503 until then)."""
    if credentials is None:
        raise NotAuthenticated("send `Authorization: Bearer <token>`")
    desk: ReviewDesk = request.app.state.desk
    who = desk.directory.authenticate(credentials.credentials)
    if who is None:
        raise NotAuthenticated("unknown token")
    try:
        await asyncio.wait_for(request.app.state.ready.wait(), _READY_WAIT_S)
    except TimeoutError:
        raise NotReady("the review index is still being rebuilt from Kafka; try again shortly") from None
    return who


Authenticated = Annotated[Reviewer, Depends(current_reviewer)]


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def build_api(
    desk: ReviewDesk, ready: asyncio.Event, *, asyncapi: dict[str, Any], max_body_bytes: int = 1024 * 1024
) -> FastAPI:
    """The FastAPI app: reviewers' API and web page, and the ``asyncapi`` document of the deployment's topics;
    a body over ``max_body_bytes`` is refused (413)."""
    api = FastAPI(
        title="Handrail human review",
        version="1",
        description="The approval queue: list, inspect and decide reviews; a decision resumes the task. "
        "The Kafka side of the same queue (`reviews.requested`, `reviews.decided`) and of every other topic - "
        "what each carries, its key and headers, who sends and receives it - is an AsyncAPI 3 document at "
        "[`/api/asyncapi.json`](/api/asyncapi.json), served like this one without a token.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # served below from the bundled assets, not a CDN
        redoc_url=None,
    )
    api.mount("/api/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    api.state.desk = desk
    api.state.ready = ready
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    api.add_middleware(SecurityHeaders)
    page = resources.files("handrail_review").joinpath("static/index.html").read_text()
    page_policy = {"Content-Security-Policy": content_security_policy(page)}
    docs_page = get_swagger_ui_html(
        openapi_url="/api/openapi.json",
        title="Handrail human review: API",
        swagger_js_url="/api/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/api/docs/assets/swagger-ui.css",
        swagger_favicon_url="/api/docs/assets/favicon-32x32.png",
    )
    docs_policy = {"Content-Security-Policy": content_security_policy(bytes(docs_page.body).decode())}
    asyncapi_body = json.dumps(asyncapi).encode()

    @api.exception_handler(ReviewError)
    async def review_error(request: Request, exc: ReviewError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.code, "detail": exc.detail}, exc.status, headers=headers)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid_request", "detail": "; ".join(problems)}, 422)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own refusals (a body that is not UTF-8 or JSON, an unknown path or method) in the
        # same {"error", "detail"} body as every other error.
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @api.exception_handler(RetryableError)
    async def unavailable(request: Request, exc: RetryableError) -> JSONResponse:
        return JSONResponse({"error": "unavailable", "detail": str(exc)}, 503, headers={"Retry-After": "1"})

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page, headers=page_policy)

    @api.get("/api/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(bytes(docs_page.body), headers=docs_policy)

    @api.get("/api/asyncapi.json", include_in_schema=False)
    async def asyncapi_document() -> Response:
        return Response(asyncapi_body, media_type="application/json")

    @api.get("/api/me", response_model=Me, summary="Who the token belongs to", responses=_errors())
    async def me(who: Authenticated) -> Me:
        return Me(id=who.id, name=who.name, roles=list(who.roles))

    @api.get("/api/reviews", response_model=list[ReviewSummary], summary="List reviews", responses=_errors(422))
    async def list_reviews(
        request: Request, who: Authenticated, filters: Annotated[ReviewFilters, Query()]
    ) -> list[ReviewSummary]:
        """The queue, or the decided history (who decided, the outcome, when), filtered."""
        _refuse_repeated(request)
        if filters.role is not None and filters.role not in desk.directory.roles:
            known = ", ".join(sorted(desk.directory.roles))
            raise _InvalidQuery(f"query.role: there is no role {filters.role!r} (roles: {known})")
        if filters.status == "decided":
            return await _history(desk.index, filters)
        return [s for s in map(_summary, await desk.index.pending()) if filters.matches(s)][: filters.limit]

    @api.get("/api/reviews/{review_id}", response_model=ReviewDetail, summary="Show one review", responses=_errors(404))
    async def show(review_id: str, who: Authenticated) -> ReviewDetail:
        item = await desk.get(review_id)
        return _detail(item, await desk.index.records(review_id), desk.directory.deciding_role(who, item.role))

    async def decided(review_id: str, who: Reviewer, item: Item) -> ReviewDetail:
        return _detail(item, await desk.index.records(review_id), desk.directory.deciding_role(who, item.role))

    @api.post(
        "/api/reviews/{review_id}/approve",
        response_model=ReviewDetail,
        summary="Approve",
        responses=_errors(400, 403, 404, 409, 413, 422),
    )
    async def approve(review_id: str, who: Authenticated, body: DecisionBody | None = None) -> ReviewDetail:
        item = await desk.decide(
            who,
            review_id,
            ReviewAction.APPROVE,
            body.reason if body else None,
            top_up=body.top_up if body else None,
        )
        return await decided(review_id, who, item)

    @api.post(
        "/api/reviews/{review_id}/reject",
        response_model=ReviewDetail,
        summary="Reject: the task ends",
        responses=_errors(400, 403, 404, 409, 413, 422),
    )
    async def reject(review_id: str, who: Authenticated, body: RejectBody) -> ReviewDetail:
        item = await desk.decide(who, review_id, ReviewAction.REJECT, body.reason)
        return await decided(review_id, who, item)

    @api.post(
        "/api/reviews/{review_id}/edit",
        response_model=ReviewDetail,
        summary="Edit the context and approve",
        responses=_errors(400, 403, 404, 409, 413, 422),
    )
    async def edit(review_id: str, who: Authenticated, body: EditBody) -> ReviewDetail:
        sent = [name for name in ("context", "arguments", "patch") if getattr(body, name) is not None]
        if len(sent) != 1:
            raise _InvalidBody(f"send exactly one of `context`, `arguments` and `patch` (got {sent or 'none'})")
        proposal = (await desk.get(review_id)).request.proposal
        if (body.arguments is not None and proposal is None) or (body.context is not None and proposal is not None):
            what = "a proposed call's `arguments`" if proposal is not None else "the checkpoint's `context`"
            raise _InvalidBody(f"review {review_id} edits {what}")
        document = body.context if body.context is not None else body.arguments
        item = await desk.decide(
            who, review_id, ReviewAction.APPROVE, body.reason, edit_context=document, edit_patch=body.patch
        )
        return await decided(review_id, who, item)

    @api.post(
        "/api/reviews/{review_id}/comments",
        response_model=ReviewDecided,
        summary="Comment",
        responses=_errors(400, 404, 413, 422),
    )
    async def comment(review_id: str, who: Authenticated, body: CommentBody) -> ReviewDecided:
        return await desk.comment(who, review_id, body.text)

    _document_roles(api, sorted(desk.directory.roles))
    return api


def _document_roles(api: FastAPI, roles: list[str]) -> None:
    """Name the roles of ``reviewers.yaml`` in the document: ``role`` is one of them (422 otherwise)."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = generate()
            for parameter in document["paths"]["/api/reviews"]["get"]["parameters"]:
                if parameter["name"] == "role":
                    parameter["schema"]["anyOf"] = [{"type": "string", "enum": roles}, {"type": "null"}]
        return api.openapi_schema or generate()

    api.openapi = openapi  # type: ignore[method-assign]


class _InvalidBody(ReviewError):
    status = 422
    code = "invalid_request"


class _InvalidQuery(ReviewError):
    status = 422
    code = "invalid_request"


def _refuse_repeated(request: Request) -> None:
    """Every filter is one value: a repeated parameter is refused, not silently cut to its last value."""
    names = [name for name, _ in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _InvalidQuery(f"query: {', '.join(repeated)} given more than once; each filter takes one value")


async def _history(index: ReviewIndex, filters: ReviewFilters) -> list[ReviewSummary]:
    """The latest decided reviews that match, looking back a page at a time."""
    limit = filters.limit or _HISTORY_LIMIT
    found: list[ReviewSummary] = []
    async with aclosing(index.decided_history(limit, _HISTORY_SCAN_MAX)) as pages:
        async for page in pages:
            found += [s for s in map(_summary, page) if filters.matches(s)]
            if len(found) >= limit:
                break
    return found[:limit]


def _summary(item: Item) -> ReviewSummary:
    request = item.request
    return ReviewSummary(
        review_id=request.review_id,
        task_id=request.task_id,
        workflow=request.workflow,
        step=request.step,
        agent=request.agent,
        reason=request.reason,
        trigger=request.trigger.value,
        rule=request.rule,
        proposed_tool=request.proposal.tool if request.proposal is not None else None,
        role=item.role,
        level=item.level,
        status=item.status,
        approvals=item.approvers,
        approvals_required=request.approvals_required,
        requested_at=request.requested_at,
        deadline=request.deadline,
        age_s=round(time.time() - item.requested_ms / 1000, 1),
        decided_by=item.fields.get("decided_by"),
        decided_at=_decided_at(item),
        decision_reason=item.fields.get("decision_reason") or None,
        outcome=item.fields.get("outcome"),
        approvals_reset=_reset(item),
    )


def _decided_at(item: Item) -> datetime | None:
    decided_ms = item.fields.get("decided_ms")
    return datetime.fromtimestamp(int(decided_ms) / 1000, UTC) if decided_ms else None


def _reset(item: Item) -> ApprovalsReset | None:
    reset = item.reset
    if reset is None:
        return None
    return ApprovalsReset(
        by=reset.by,
        at=datetime.fromtimestamp(reset.at_ms / 1000, UTC),
        dropped=list(reset.dropped),
        reason=f"{reset.by} {'edited the context' if reset.why == 'edit' else 'approved with a different top-up'}, "
        f"which changes what is approved: the approvals of {', '.join(reset.dropped)} no longer count and must be "
        "given again",
    )


def _arguments(item: Item) -> dict[str, Any] | None:
    """What a proposed call runs with if approved now: what a second approver must see is the edit, not the
    model's first try."""
    proposal, edit = item.request.proposal, item.edit
    if proposal is None:
        return None
    return dict(jsonpatch.apply_patch(proposal.arguments, edit, in_place=False)) if edit else proposal.arguments


def _detail(item: Item, records: list[ReviewDecided], role: str | None) -> ReviewDetail:
    request = item.request
    step, halted = request.checkpoint, request.halted
    return ReviewDetail(
        **_summary(item).model_dump(),
        context=request.context,
        context_hash=request.context_hash,
        diff=step.patch if step is not None else [],
        output=step.output if step is not None else None,
        decisions=step.decisions if step is not None else (request.progress.decisions if request.progress else []),
        budget=step.budget if step is not None else (halted.budget if halted is not None else BudgetSnapshot()),
        halt_error_type=request.halt_error_type,
        proposal=request.proposal,
        edit=item.edit,
        arguments=_arguments(item),
        top_up=item.top_up,
        records=records,
        may_decide=role is not None and item.status == "pending",
    )
