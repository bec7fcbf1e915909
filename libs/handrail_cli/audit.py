"""``handrail trace TASK`` and ``handrail audit verify TASK``: what happened, and is the record intact."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import typer
from pydantic import ValidationError
from rich.tree import Tree

from handrail.audit import AuditRecord, verify_chain
from handrail.audit.chain import ChainReport
from handrail.audit.reader import read_key
from handrail.checkpoints import Trail, lineage_line
from handrail.errors import HandrailError
from handrail.messages import DecisionEvent, DecisionEvents
from handrail.signing import Verifier
from handrail.topics import Topics
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, resolve_task, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings

app = typer.Typer(no_args_is_help=True, help="Check a task's audit trail.")


@app.command("verify")
def verify(
    task_id: str = typer.Argument(..., help="The task whose audit chain to check (its id, or its unique start)."),
    topic: str = typer.Option(None, "--topic", help="Read this topic instead of <prefix>audit (e.g. a copy)."),
    as_json: bool = JsonOption,
    bootstrap: str = typer.Option(None, help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."),
) -> None:
    """Say "intact", or name the first record that was changed, removed, reordered or wrongly signed.

    Each record's signature is checked against the trust store (HANDRAIL_TRUSTED_KEYS_FILE; the
    local stack's keys by default): valid, and by a signer that may record what its actor did.
    Exit codes: 0 intact, 1 broken, 2 no trust store to check signatures with, 4 no records.
    """
    settings = CliSettings()
    task_id = resolve_task(task_id, settings)
    verifier = _verifier(settings)
    if verifier is None and settings.signing_required:
        err_console.print(
            "[red]error:[/red] audit records are signed, and there are no public keys to check them with: set "
            "HANDRAIL_TRUSTED_KEYS_FILE (a trust store, or a folder of <signer>.pub), or "
            "HANDRAIL_SIGNING_REQUIRED=false to check the hash chain alone",
            markup=True,
        )
        raise typer.Exit(ExitCode.USAGE)
    source = topic or Topics(settings.topic_prefix).audit
    raw = run(read_key(bootstrap or settings.kafka_bootstrap, source, task_id, settings.kafka_credentials()))
    report = _verify(raw, verifier)
    if report.records == 0:
        (err_console if as_json else console).print(f"no audit records for task {task_id} on {source}")
        raise typer.Exit(ExitCode.NOT_FOUND)
    signed = " and signed" if verifier is not None else ""
    if as_json:
        verdict = {
            "task_id": task_id,
            "topic": source,
            "intact": report.intact,
            "records": report.records,
            "signatures_checked": verifier is not None,
            "bad_seq": report.bad_seq,
            "bad_offset": report.bad_offset,
            "problem": report.problem or None,
        }
        print_json_lines([verdict])
    else:
        console.print(f"task {task_id}: {report.describe()}{signed if report.intact else ''}", highlight=False)
    if not report.intact:
        raise typer.Exit(ExitCode.FAILED)


def _verifier(settings: CliSettings) -> Verifier | None:
    try:
        return settings.audit_verifier()
    except HandrailError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.USAGE) from None


def _verify(raw: list[tuple[int, int, bytes]], verifier: Verifier | None = None) -> ChainReport:
    records: list[tuple[int | None, AuditRecord]] = []
    for index, (offset, _, value) in enumerate(raw, start=1):
        try:
            records.append((offset, AuditRecord.model_validate_json(value)))
        except ValidationError:
            return ChainReport(False, len(raw), index, offset, "it is not a readable audit record")
    return verify_chain(records, verifier)


def trace(
    task_id: str = typer.Argument(..., help="The task to trace (its id, or its unique start)."),
    as_json: bool = JsonOption,
    bootstrap: str = typer.Option(None, help="Kafka bootstrap servers (default: HANDRAIL_KAFKA_BOOTSTRAP)."),
) -> None:
    """Rebuild a task's lineage from the audit trail: steps, handoffs with diffs, calls, budget, ending."""
    settings = CliSettings()
    task_id = resolve_task(task_id, settings)
    topics = Topics(settings.topic_prefix)
    address = bootstrap or settings.kafka_bootstrap
    credentials = settings.kafka_credentials()

    async def gather() -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int, bytes]]]:
        audit, events = await asyncio.gather(
            read_key(address, topics.audit, task_id, credentials),
            read_key(address, topics.events, task_id, credentials),
        )
        return audit, events

    audit_raw, events_raw = run(gather())
    records = [AuditRecord.model_validate_json(v) for _, _, v in audit_raw]
    events = [e for _, _, v in events_raw for e in DecisionEvents.model_validate_json(v).events]
    if not records:
        (err_console if as_json else console).print(f"no audit records for task {task_id}")
        raise typer.Exit(ExitCode.NOT_FOUND)
    chain = _verify(audit_raw, _verifier(settings))
    lineage = Trail.of(task_id, records)
    if as_json:
        body = {
            "task_id": task_id,
            "chain": chain.describe(),
            "epoch": lineage.epoch,
            "forked_from": lineage.forked_from,
            "forked_to": lineage.forked_to,
            "records": [r.model_dump(mode="json", exclude_none=True) for r in records],
            "calls": [e.model_dump(mode="json", exclude_none=True) for e in events],
        }
        print_json_lines([body])
        return
    console.print(_tree(task_id, records, events, chain))


def _tree(task_id: str, records: list[AuditRecord], events: list[DecisionEvent], chain: ChainReport) -> Tree:
    last = records[-1]
    tree = Tree(
        f"[bold]task {task_id}[/bold]  workflow={last.workflow or records[0].workflow}  last={last.action}  "
        f"audit chain {chain.describe()}"
    )
    calls_by_step: dict[str, list[DecisionEvent]] = {}
    for event in sorted(events, key=lambda e: e.at):
        calls_by_step.setdefault(event.step, []).append(event)
    takes_calls = [r for r in records if r.action == "handoff.accepted" or r.action.startswith("step.")]
    last_of_step = {r.step: r for r in takes_calls}
    for record in records:
        node = tree.add(_line(record))
        if (lineage := lineage_line(record)) is not None:
            node.add(lineage)
        handoff = record.details.get("handoff")
        if isinstance(handoff, dict):
            node.add(f"[dim]took on[/dim] the handoff from {handoff.get('sender')} ({handoff.get('message_id')})")
        # A step's calls under its record (or, in older trails, under the handoff.accepted before it); a step
        # that ran more than once (an evaluator sent it back) has each run's calls under that run's record.
        if any(r is record for r in takes_calls) and record.step in calls_by_step:
            pending = calls_by_step[record.step]
            is_last = last_of_step[record.step] is record
            taken = pending if is_last else [e for e in pending if e.at <= record.at]
            calls_by_step[record.step] = [e for e in pending if e not in taken]
            for event in taken:
                node.add(_call(event))
        seen = record.details.get("context_seen")
        if isinstance(seen, dict) and (seen.get("pointers") is not None or seen.get("compactions")):
            node.add(_context_seen(seen))
        patch = record.details.get("patch")
        if patch:
            for op in patch:
                value = json.dumps(op.get("value"))
                node.add(f"[dim]diff[/dim] {op['op']} {op['path']} {value[:100]}{'…' if len(value) > 100 else ''}")
        budget = record.details.get("budget")
        if budget:
            node.add(
                f"[dim]budget[/dim] steps {budget.get('steps_used')}/{budget.get('max_steps')}  "
                f"tokens {budget.get('tokens_used')}/{budget.get('max_tokens')}  "
                f"cost {budget.get('cost_usd_used')}/{budget.get('max_cost_usd')} USD"
            )
    return tree


def _context_seen(seen: dict[str, Any]) -> str:
    """What of the context a step's agent was shown, and how often its conversation was compacted."""
    view = seen.get("view") or ", ".join(seen.get("pointers") or []) or "all of it"
    compactions = seen.get("compactions") or []
    replaced = sum(len(c.get("replaced", [])) for c in compactions)
    tail = f"  compacted {len(compactions)}x ({replaced} messages replaced)" if compactions else ""
    return f"[dim]shown[/dim] {view}  view {str(seen.get('view_hash', '-'))[:10]}{tail}"


def _line(record: AuditRecord) -> str:
    hashes = ""
    if record.input_hash or record.output_hash:
        hashes = f"  ctx {(record.input_hash or '-')[:10]}→{(record.output_hash or '-')[:10]}"
    step = f" step={record.step}" if record.step else ""
    why = f"  — {record.reason}" if record.reason else ""
    return (
        f"{_time(record.at)} #{record.seq} [cyan]{record.actor}[/cyan] [bold]{record.action}[/bold]{step}{hashes}{why}"
    )


def _call(event: DecisionEvent) -> str:
    tokens = f" {event.input_tokens}+{event.output_tokens} tok" if event.kind == "model_call" else ""
    args = f" args {event.args_hash[:10]}" if event.args_hash else ""
    error = f" ({event.error_type})" if event.error_type else ""
    head = f"{_time(event.at)} {event.kind} {event.name} [bold]{event.outcome}[/bold]"
    return f"{head}{error}{tokens}{args} {event.latency_ms:.1f} ms"


def _time(at: datetime | Any) -> str:
    return at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] if isinstance(at, datetime) else str(at)
