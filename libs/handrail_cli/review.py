"""``handrail review list|show|approve|reject``: the review queue from a terminal, over the service's HTTP API.

The service's address and the reviewer's token come from ``--url`` / ``--token``
or ``HANDRAIL_REVIEW_URL`` / ``HANDRAIL_REVIEW_TOKEN``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.table import Column, Table

from handrail.errors import ContractError
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, resolve_prefix
from handrail_cli.exit_codes import ExitCode
from handrail_dev import DevSettings
from handrail_dev.reviewer_tokens import dev_tokens

#: A person is waiting on the answer; a slow service is reported rather than waited on.
_TIMEOUT_S = 30.0

app = typer.Typer(help="List, inspect and decide the reviews waiting for a person.", no_args_is_help=True)


class ReviewCliSettings(BaseSettings):
    """Where the human-review service answers, and as whom to call it."""

    model_config = SettingsConfigDict(env_prefix="HANDRAIL_", frozen=True, extra="ignore")

    review_url: str = "http://127.0.0.1:8086"
    review_token: SecretStr | None = None


UrlOption = typer.Option(None, "--url", help="The human-review service (default: HANDRAIL_REVIEW_URL).")
TokenOption = typer.Option(None, "--token", help="Your reviewer token (default: HANDRAIL_REVIEW_TOKEN).")


def _call(
    method: str,
    path: str,
    url: str | None,
    token: str | None,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> Any:
    settings = ReviewCliSettings()
    secret = token or (settings.review_token.get_secret_value() if settings.review_token else None)
    if not secret:
        err_console.print("[red]error:[/red] no reviewer token: pass --token or set HANDRAIL_REVIEW_TOKEN")
        raise typer.Exit(ExitCode.USAGE)
    base = (url or settings.review_url).rstrip("/")
    try:
        response = httpx.request(
            method,
            f"{base}{path}",
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        err_console.print(f"[red]error:[/red] cannot reach the review service at {base}: {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    if response.status_code >= 400:
        try:
            error = response.json()
            message = f"{error.get('error', response.status_code)}: {error.get('detail', response.text)}"
        except ValueError:
            message = response.text
        err_console.print(f"[red]error {response.status_code}:[/red] {message}")
        raise typer.Exit(ExitCode.FAILED)
    return response.json()


@app.command("list")
def list_reviews(
    workflow: str = typer.Option(None, "--workflow", help="Only this workflow."),
    reason: str = typer.Option(None, "--reason", help="Only reviews whose reason contains this text."),
    min_age_s: float = typer.Option(None, "--min-age-s", help="Only reviews pending at least this long."),
    decided: bool = typer.Option(False, "--decided", help="Recent decisions instead of the queue."),
    url: str = UrlOption,
    token: str = TokenOption,
    as_json: bool = JsonOption,
) -> None:
    """The reviews waiting for a person (or recently decided)."""
    params = {"status": "decided" if decided else "pending"}
    for name, value in (("workflow", workflow), ("reason", reason), ("min_age_s", min_age_s)):
        if value is not None:
            params[name] = str(value)
    reviews = _call("GET", "/api/reviews", url, token, params=params)
    if as_json:
        print_json_lines(reviews)
        return
    # Ids in full, never elided: they are what `approve` and `reject` take (a unique prefix will do too).
    id_width = max((len(r["review_id"]) for r in reviews), default=6)
    task_width = max((len(r["task_id"]) for r in reviews), default=4)
    table = Table(
        Column("review", no_wrap=True, min_width=id_width),
        Column("task", no_wrap=True, min_width=task_width),
        "workflow · step",
        "why",
        "role",
        "approvals",
        "age",
        "status",
    )
    for r in reviews:
        table.add_row(
            r["review_id"],
            r["task_id"],
            f"{r['workflow']} · {r['step']}",
            r["reason"],
            r["role"],
            f"{len(r['approvals'])}/{r['approvals_required']}",
            f"{r['age_s']:.0f}s",
            r["status"] + (f" → {r['outcome']}" if r.get("outcome") else ""),
        )
    console.print(table)


@app.command("show")
def show(review_id: str, url: str = UrlOption, token: str = TokenOption, as_json: bool = JsonOption) -> None:
    """One review as JSON: context, diff from the previous step, decision trail, budget, approvals, and the
    proposed call (tool, arguments, the model's reason) when a call waits for it.

    Indented for people; with --json on one line."""
    review_id = _resolve(review_id, url, token)
    review = _call("GET", f"/api/reviews/{review_id}", url, token)
    if as_json:
        print_json_lines([review])
    else:
        typer.echo(json.dumps(review, indent=2, ensure_ascii=False))


@app.command("approve")
def approve(
    review_id: str,
    reason: str = typer.Option(None, "--reason", help="Why; kept on the review and the audit trail."),
    edit: str = typer.Option(
        None,
        "--edit",
        help="Approve with this JSON Patch of the context, or of a proposed call's arguments (or @file).",
    ),
    top_up: str = typer.Option(
        None,
        "--top-up",
        help="Approving a halt: more budget, e.g. 'cost_usd=0.5,tokens=20000,steps=2,wall_clock_s=300' "
        "(within the workflow's max_top_up and your role's bound).",
    ),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Approve: the task resumes from its checkpoint once enough people approved."""
    review_id = _resolve(review_id, url, token)
    if top_up is not None:
        if edit is not None:
            raise typer.BadParameter("approve a halt with more budget, or edit a step's context: not both")
        body = {"reason": reason, "top_up": parse_top_up(top_up)}
        review = _call("POST", f"/api/reviews/{review_id}/approve", url, token, body)
    elif edit is not None:
        text = Path(edit[1:]).read_text() if edit.startswith("@") else edit
        try:
            patch = json.loads(text)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--edit") from None
        review = _call("POST", f"/api/reviews/{review_id}/edit", url, token, {"patch": patch, "reason": reason})
    else:
        review = _call("POST", f"/api/reviews/{review_id}/approve", url, token, {"reason": reason})
    _report(review)


_TOP_UP_FIELDS = ("tokens", "cost_usd", "steps", "wall_clock_s")


def parse_top_up(text: str) -> dict[str, float]:
    """``cost_usd=0.5,tokens=2000`` -> ``{"cost_usd": 0.5, "tokens": 2000}``; the service checks the bounds."""
    found: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in _TOP_UP_FIELDS:
            raise typer.BadParameter(
                f"{part!r}: expected NAME=AMOUNT with NAME one of {', '.join(_TOP_UP_FIELDS)}", param_hint="--top-up"
            )
        try:
            amount = float(value)
        except ValueError:
            raise typer.BadParameter(f"{part!r}: {value!r} is not a number", param_hint="--top-up") from None
        found[name.strip()] = int(amount) if name.strip() in ("tokens", "steps") and amount.is_integer() else amount
    if not found:
        raise typer.BadParameter("say how much, e.g. cost_usd=0.5", param_hint="--top-up")
    return found


@app.command("reject")
def reject(
    review_id: str,
    reason: str = typer.Option(..., "--reason", help="Why; the task's result carries it."),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Reject: the task ends with a `rejected` result carrying your reason."""
    review_id = _resolve(review_id, url, token)
    _report(_call("POST", f"/api/reviews/{review_id}/reject", url, token, {"reason": reason}))


@app.command("tokens")
def tokens(
    reviewers_file: Annotated[Path, typer.Option("--reviewers", help="Who the reviewers are.")] = Path(
        "config/reviewers.yaml"
    ),
    as_json: bool = JsonOption,
) -> None:
    """A token for every reviewer, kept in <run dir>/reviewer-tokens.json (0600, reused; delete it for new ones).

    `make up` and `make demo` use it; docker-compose runs it as its reviewer-tokens job; for Kubernetes:
    kubectl create secret generic handrail-reviewer-tokens --from-file=tokens.json=.run/reviewer-tokens.json
    """
    try:
        found, path = dev_tokens(DevSettings().run_dir, reviewers_file)
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None
    if as_json:
        print_json_lines({"reviewer_id": reviewer_id, "token": token} for reviewer_id, token in found.items())
    else:
        for reviewer_id, token in found.items():
            typer.echo(f"{reviewer_id:12} {token}")
    err_console.print(f"kept in {path}")


@app.command("new-token")
def new_token() -> None:
    """Print a fresh reviewer token and the sha256 to put in reviewers.yaml as `token_sha256`."""
    token = secrets.token_urlsafe(32)
    print(f"token:        {token}\ntoken_sha256: {hashlib.sha256(token.encode()).hexdigest()}")


#: A review id in full (a uuid): used as it is, without looking it up.
_FULL_ID_LENGTH = 36


def _resolve(review_id: str, url: str | None, token: str | None) -> str:
    """The review a unique prefix names (pending or recently decided); a full id as it is."""
    if len(review_id) >= _FULL_ID_LENGTH:
        return review_id
    known = (
        str(r["review_id"])
        for status in ("pending", "decided")
        for r in _call("GET", "/api/reviews", url, token, params={"status": status})
    )
    return resolve_prefix(review_id, known, "pending or recent review", "REVIEW_ID")


def _report(review: dict[str, Any]) -> None:
    status = review["status"]
    reset = review.get("approvals_reset")
    if reset:
        console.print(f"[yellow]approvals reset:[/yellow] {reset['reason']}", highlight=False)
    if status == "pending":
        console.print(f"{review['review_id']}: {len(review['approvals'])} of {review['approvals_required']} approvals")
    else:
        console.print(f"{review['review_id']}: {status} → {review.get('outcome')}")


if __name__ == "__main__":
    app()
