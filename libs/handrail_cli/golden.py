"""``handrail golden``: suites of real tasks from production, run again against a change.

``export`` writes a suite file from a workflow's audit trails: one case per finished task, each step
with the handoff it ran on, its report (the accepted output and the recording of every model reply
and tool answer) and what the trail committed (the recording's hash, the context hash). ``run``
re-runs every case: from the recordings (no model, no tool: a change to the code, a prompt file, a
tool's schema or the workflow shows), or for real with ``--live`` and for the agents ``--prompt`` /
``--model`` name (``handrail_worker.replay``). A case passes when every step did the same, is
``changed`` when a step went another way or gave another output (the diff is shown), ``failed`` when
a step did not finish, broke its schema, or its recording was tampered with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from handrail.audit import AuditRecord
from handrail.checkpoints import Trail
from handrail.contracts import Contracts, load_contracts
from handrail.errors import ContractError
from handrail.llm.models import ModelCatalogue, load_catalogue
from handrail.messages import TaskStatus, utcnow
from handrail.prompts import PromptLibrary
from handrail.tools import ToolRegistry, default_registry
from handrail.topics import Topics
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.overrides import ModelOption, PromptOption, parse_overrides
from handrail_cli.recorded import RecordedStep, Rerunner, Source
from handrail_cli.settings import CliSettings

app = typer.Typer(
    no_args_is_help=True, help="Golden suites from production: export a workflow's finished tasks, run them again."
)

Verdict = Literal["pass", "changed", "failed", "skipped"]
#: A step's outcome -> what it makes of its case (the worst step decides).
_VERDICTS: dict[str, Verdict] = {
    "same": "pass",
    "not_rerun": "skipped",
    "diverged": "changed",
    "changed": "changed",
    "tampered": "failed",
    "failed": "failed",
}
_ORDER: tuple[Verdict, ...] = ("skipped", "pass", "changed", "failed")

_OUT = typer.Option(..., "--out", "-o", help="The suite file to write (JSON).")
_SINCE = typer.Option(None, "--since", help="Only tasks opened at or after this time (ISO 8601, UTC unless it says).")
_SUITE = typer.Argument(..., help="A suite file (handrail golden export).")


class GoldenCase(BaseModel):
    """One task as it ran: its input, how it ended, and each step as the record holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    opened_at: datetime | None = None
    input: Any = None
    status: str
    steps: list[RecordedStep]


class GoldenSuite(BaseModel):
    """A suite file (``handrail golden export``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite_version: Literal[1] = 1
    workflow: str
    exported_at: datetime
    only: Literal["completed", "approved"] = "completed"
    cases: list[GoldenCase] = Field(default_factory=list)


@app.command("export")
def export(
    workflow: str = typer.Option(..., "--workflow", "-w", help="The workflow (workflows.yaml) whose tasks to take."),
    out: Path = _OUT,
    since: datetime = _SINCE,
    only: str = typer.Option(
        "completed", "--only", help="completed: tasks that completed; approved: and that a person approved."
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many tasks, the latest first."),
    as_json: bool = JsonOption,
    bootstrap: str = typer.Option(
        None, "--bootstrap", help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."
    ),
) -> None:
    """Write a suite of the workflow's finished tasks: inputs, recorded replies, accepted outputs.

    A task whose steps cannot all be re-run (a report or handoff past its topic's retention, a step
    without a recording) is left out and counted. Exit codes: 0 written, 2 bad arguments, 4 no task
    matched.
    """
    if only not in ("completed", "approved"):
        raise typer.BadParameter(f"{only!r}: expected completed or approved", param_hint="--only")
    settings = CliSettings()
    contracts, _, _ = _config(settings)
    spec = contracts.workflows.get(workflow)
    if spec is None:
        raise typer.BadParameter(
            f"workflow {workflow!r} is not in workflows.yaml ({', '.join(sorted(contracts.workflows))})",
            param_hint="--workflow",
        )
    topics = Topics(settings.topic_prefix)
    source = Source(settings, topics, bootstrap or settings.kafka_bootstrap, topics.steps)
    tasks = run(source.for_workflow(workflow, list(spec.agents)))
    cases, left_out = select_cases(tasks, since=since, only=only, limit=limit)
    suite = GoldenSuite.model_validate({"workflow": workflow, "exported_at": utcnow(), "only": only, "cases": cases})
    if not cases:
        err_console.print(f"no {only} task of {workflow!r} to export" + _left_out(left_out))
        raise typer.Exit(ExitCode.NOT_FOUND)
    out.write_text(suite.model_dump_json(indent=1, exclude_none=True) + "\n")
    if as_json:
        said = {"suite": str(out), "workflow": workflow, "cases": [c.task_id for c in cases], "left_out": left_out}
        print_json_lines([said])
        return
    console.print(f"wrote {len(cases)} case(s) of {workflow!r} to {out}" + _left_out(left_out), highlight=False)


def select_cases(
    tasks: dict[str, tuple[list[AuditRecord], Any]], *, since: datetime | None, only: str, limit: int
) -> tuple[list[GoldenCase], int]:
    """The cases to export (the latest first), and how many matching tasks could not be re-run whole."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a time without an offset is UTC, as every record's is
    matching: list[tuple[datetime, str, list[AuditRecord]]] = []
    for task_id, (records, _) in tasks.items():
        opened = next((r.at for r in records if r.action == "task.opened"), None)
        if opened is None or (since is not None and opened < since):
            continue
        if Trail.of(task_id, records).status != TaskStatus.COMPLETED:
            continue
        if only == "approved" and not any(r.action == "review.approved" for r in records):
            continue
        matching.append((opened, task_id, records))
    matching.sort(reverse=True)
    cases: list[GoldenCase] = []
    left_out = 0
    for opened, task_id, _ in matching:
        if len(cases) == limit:
            break
        steps = tasks[task_id][1](task_id)
        if not steps or any(s.missing is not None and s.action not in ("step.failed", "step.halted") for s in steps):
            left_out += 1
            continue
        first = steps[0].envelope
        task_input = first.context.get("input") if first is not None else None
        cases.append(GoldenCase(task_id=task_id, opened_at=opened, input=task_input, status="completed", steps=steps))
    return cases, left_out


@app.command("run")
def run_suite(
    suite_file: Path = _SUITE,
    live: bool = typer.Option(
        False, "--live", help="Run every step for real: its model, tools without side effects (others run dry)."
    ),
    prompts: list[str] = PromptOption,
    models: list[str] = ModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Run every case of the suite again and say pass, changed (with the diff) or failed per case.

    Without --live, each step is re-run from its recording (no model or tool is called): any change
    that makes a step ask its model something else, or call another tool, shows. --prompt and --model
    run those agents' steps for real with that prompt version or model. Exit codes: 0 every case
    passed, 1 a case changed or failed, 2 bad arguments, a suite file or configuration that does not load.
    """
    settings = CliSettings()
    contracts, tools, catalogue = _config(settings)
    suite = _load(suite_file)
    workflow = contracts.workflows.get(suite.workflow)
    if workflow is None:
        raise typer.BadParameter(
            f"the suite's workflow {suite.workflow!r} is not in workflows.yaml", param_hint="SUITE"
        )
    agents = list(workflow.agents)
    where = f"of workflow {suite.workflow!r}"
    overrides = parse_overrides(contracts, settings.config_dir, prompts or [], models or [], agents, where)
    library = PromptLibrary(settings.config_dir / "prompts")
    rerunner = Rerunner(contracts, tools, catalogue, library, live=live, overrides=overrides)
    results = run(_run_cases(rerunner, suite.cases))
    verdicts = {case.task_id: _verdict(rows) for case, rows in zip(suite.cases, results, strict=True)}
    if as_json:
        lines = [
            {"case": case.task_id, "verdict": verdicts[case.task_id], "steps": rows}
            for case, rows in zip(suite.cases, results, strict=True)
        ]
        print_json_lines(lines)
    else:
        for case, rows in zip(suite.cases, results, strict=True):
            _print_case(case, verdicts[case.task_id], rows)
        counts = {v: sum(1 for x in verdicts.values() if x == v) for v in _ORDER}
        summary = ", ".join(f"{counts[v]} {v}" for v in ("pass", "changed", "failed", "skipped") if counts[v])
        console.print(f"{len(suite.cases)} case(s) of {suite.workflow!r}: {summary}", highlight=False)
    if any(v in ("changed", "failed") for v in verdicts.values()):
        raise typer.Exit(ExitCode.FAILED)


async def _run_cases(rerunner: Rerunner, cases: list[GoldenCase]) -> list[list[dict[str, Any]]]:
    try:
        return [[await rerunner.run(step) for step in case.steps] for case in cases]
    finally:
        await rerunner.close()


def _verdict(rows: list[dict[str, Any]]) -> Verdict:
    """The worst of the steps' verdicts; a case whose every step was skipped is skipped."""
    return max((_VERDICTS.get(row["outcome"], "failed") for row in rows), key=_ORDER.index, default="skipped")


def _print_case(case: GoldenCase, verdict: Verdict, rows: list[dict[str, Any]]) -> None:
    console.print(f"case {case.task_id}: {verdict}", highlight=False)
    for row in rows:
        if row["outcome"] == "same":
            continue
        mode = " (live)" if row["mode"] == "live" else ""
        line = f"  {row['step']:<14} {row['agent']:<20} {row['outcome']}{mode}: {row['detail']}"
        console.print(line, highlight=False, markup=False)
        for op in row.get("patch") or []:
            console.print(f"      {op}", highlight=False, markup=False)


def _config(settings: CliSettings) -> tuple[Contracts, ToolRegistry, ModelCatalogue]:
    try:
        tools = default_registry()
        return load_contracts(settings.config_dir, tools.names()), tools, load_catalogue(settings.config_dir)
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(ExitCode.USAGE) from None


def _load(path: Path) -> GoldenSuite:
    try:
        return GoldenSuite.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise typer.BadParameter(f"{path}: {exc.strerror}", param_hint="SUITE") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise typer.BadParameter(
            f"{path} is not a suite file: {where}: {first['msg']} ({exc.error_count()} problem(s))", param_hint="SUITE"
        ) from None


def _left_out(count: int) -> str:
    return f" ({count} left out: a step could not be re-run)" if count else ""
