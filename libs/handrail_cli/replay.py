"""``handrail replay TASK``: re-run a task's steps from their recordings, and show they did the same.

For every step on the task's audit trail, the step's report is read back from ``<prefix>steps``
(its recording: each model reply and tool answer it got) and the handoff it ran on from the
agent's topic; the worker's runner runs the step again with those answers played back
(``handrail_worker.replay``): no model, no tool, nothing written anywhere. A step is ``same``
when it made exactly the recorded calls and led to the context hash the trail committed;
``diverged`` says at which call and how; ``tampered`` when its recording no longer hashes to
what the trail holds. The trail's own hash chain is checked first (signatures are
``handrail audit verify``'s).

``--live`` runs each step again for real from the same handoff (``--prompt`` / ``--model`` for
some agents' steps): the model is called, tools without side effects run, side-effecting tools
run dry, and each step's output is compared with the recorded one.
"""

from __future__ import annotations

from typing import Any

import typer

from handrail.audit import verify_chain
from handrail.contracts import load_contracts
from handrail.errors import ContractError
from handrail.llm.models import load_catalogue
from handrail.prompts import PromptLibrary
from handrail.tools import default_registry
from handrail.topics import Topics
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, resolve_task, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.overrides import ModelOption, PromptOption, parse_overrides
from handrail_cli.recorded import RecordedStep, Rerunner, Source
from handrail_cli.settings import CliSettings

#: What fails the command: a step that did not do the same (recorded), or did not finish or changed (live).
BAD = frozenset({"diverged", "tampered", "failed", "changed"})


def replay(
    task_id: str = typer.Argument(..., help="The task whose steps to re-run (its id, or its unique start)."),
    live: bool = typer.Option(
        False, "--live", help="Run each step again for real: its model, tools without side effects (others run dry)."
    ),
    prompts: list[str] = PromptOption,
    models: list[str] = ModelOption,
    steps_topic: str = typer.Option(
        None, "--steps-topic", help="Read the step reports from this topic instead of <prefix>steps (e.g. a copy)."
    ),
    as_json: bool = JsonOption,
    bootstrap: str = typer.Option(
        None, "--bootstrap", help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."
    ),
) -> None:
    """Re-run every step of the task from its recorded model replies and tool results (calling no model or
    tool) and say, per step: same (the same calls, the same context hash), diverged (where, and how),
    tampered (its recording does not hash to what the audit trail committed), or not re-run (why).

    With --live (or --prompt / --model, for those agents' steps) the steps run again for real from the
    same handoffs, side-effecting tools dry, and each output is compared with the recorded one: same,
    changed (with the JSON Patch), or failed.

    Exit codes: 0 every re-run step did the same, 1 one did not (or the audit chain is broken), 2
    bad arguments or configuration that does not load, 4 no audit records for the task.
    """
    settings = CliSettings()
    try:
        # Tools run only on a live re-run, and then only those without side effects.
        tools = default_registry()
        contracts = load_contracts(settings.config_dir, tools.names())
        catalogue = load_catalogue(settings.config_dir)
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(ExitCode.USAGE) from None
    task_id = resolve_task(task_id, settings)
    topics = Topics(settings.topic_prefix)
    source = Source(settings, topics, bootstrap or settings.kafka_bootstrap, steps_topic or topics.steps)
    records, steps = run(source.for_task(task_id))
    if not records:
        (err_console if as_json else console).print(f"no audit records for task {task_id} on {topics.audit}")
        raise typer.Exit(ExitCode.NOT_FOUND)
    agents = list(dict.fromkeys(s.agent for s in steps))
    overrides = parse_overrides(
        contracts, settings.config_dir, prompts or [], models or [], agents, f"in task {task_id}"
    )
    library = PromptLibrary(settings.config_dir / "prompts")
    rerunner = Rerunner(contracts, tools, catalogue, library, live=live, overrides=overrides)
    chain = verify_chain([(None, r) for r in records]).describe()
    rows = run(_rerun_all(rerunner, steps))
    bad = [r for r in rows if r["outcome"] in BAD]
    if as_json:
        print_json_lines([{"task_id": task_id, "chain": chain, **row} for row in rows])
    else:
        _print(task_id, chain, rows, bad)
    if bad or not chain.startswith("intact"):
        raise typer.Exit(ExitCode.FAILED)


async def _rerun_all(rerunner: Rerunner, steps: list[RecordedStep]) -> list[dict[str, Any]]:
    try:
        return [await rerunner.run(step) for step in steps]
    finally:
        await rerunner.close()


def _print(task_id: str, chain: str, rows: list[dict[str, Any]], bad: list[dict[str, Any]]) -> None:
    console.print(f"task {task_id}: audit chain {chain}", highlight=False)
    for row in rows:
        mode = " (live)" if row["mode"] == "live" else ""
        line = f"  {row['step']:<14} {row['agent']:<20} {row['outcome']}{mode}: {row['detail']}"
        console.print(line, highlight=False, markup=False)
        for op in row.get("patch") or []:
            console.print(f"      {op}", highlight=False, markup=False)
    rerun = [r for r in rows if r["outcome"] != "not_rerun"]
    verdict = f"{len(bad)} of {len(rerun)} did not do the same" if bad else f"all {len(rerun)} did the same"
    console.print(f"{len(rerun)} of {len(rows)} steps re-run: {verdict}", highlight=False)
