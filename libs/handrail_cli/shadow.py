"""``handrail shadow report AGENT``: how the agent's shadow version compares with the live one
(``handrail_worker.shadow``: agreement, cost and latency per candidate, the latest disagreements)."""

from __future__ import annotations

from typing import Any

import typer

from handrail.contracts import load_contracts
from handrail.errors import ContractError
from handrail.tools import default_registry
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.exit_codes import ExitCode
from handrail_cli.settings import CliSettings
from handrail_worker.shadow import ShadowStore, candidate_name

app = typer.Typer(no_args_is_help=True, help="Shadow versions of agents: run beside the live one, never for real.")


@app.command("report")
def report(
    agent: str = typer.Argument(..., help="The agent (agents.yaml)."),
    as_json: bool = JsonOption,
) -> None:
    """Per shadow candidate of the agent: steps compared, agreement rate, cost and time per step, live and
    shadow, and the latest disagreements with their diffs. Exit codes: 0 shown, 2 unknown agent, 4 nothing
    compared yet."""
    settings = CliSettings()
    try:
        contracts = load_contracts(settings.config_dir, default_registry().names())
    except ContractError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(ExitCode.USAGE) from None
    spec = contracts.agents.get(agent)
    if spec is None:
        raise typer.BadParameter(f"{agent!r} is not in agents.yaml ({', '.join(sorted(contracts.agents))})")
    rows = [_summary(row) for row in run(_read(settings, agent))]
    if not rows:
        configured = f"its shadow is {candidate_name(spec, spec.shadow)}" if spec.shadow else "it has no `shadow`"
        (err_console if as_json else console).print(f"no step of {agent} was shadowed yet ({configured})")
        raise typer.Exit(ExitCode.NOT_FOUND)
    if as_json:
        print_json_lines([{"agent": agent, **row} for row in rows])
        return
    for row in rows:
        console.print(
            f"{agent} vs {row['candidate']}: {row['runs']} steps, {row['agreement']:.1%} the same "
            f"({row['changed']} changed, {row['failed']} failed)",
            highlight=False,
            markup=False,
        )
        console.print(
            f"  per step: live ${row['live_cost_usd_per_step']:.6f} in {row['live_ms_per_step']:.0f} ms, "
            f"shadow ${row['shadow_cost_usd_per_step']:.6f} in {row['shadow_ms_per_step']:.0f} ms",
            highlight=False,
            markup=False,
        )
        for seen in row["recent"][:10]:
            console.print(
                f"  {seen['outcome']}: step {seen['step']} ({seen['report']}): {seen['detail']}", markup=False
            )
            for op in seen.get("patch") or []:
                console.print(f"      {op}", highlight=False, markup=False)


async def _read(settings: CliSettings, agent: str) -> list[dict[str, Any]]:
    redis = settings.redis_client()
    try:
        return await ShadowStore(redis, settings.redis_prefix, agent).report()
    finally:
        await redis.aclose()


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    runs = int(row.get("runs", 0))
    per = max(runs, 1)
    return {
        "candidate": row["candidate"],
        "runs": runs,
        "same": int(row.get("same", 0)),
        "changed": int(row.get("changed", 0)),
        "failed": int(row.get("failed", 0)),
        "agreement": row.get("same", 0) / per,
        "live_cost_usd_per_step": row.get("live_cost_usd", 0.0) / per,
        "shadow_cost_usd_per_step": row.get("shadow_cost_usd", 0.0) / per,
        "live_ms_per_step": row.get("live_ms", 0.0) / per,
        "shadow_ms_per_step": row.get("shadow_ms", 0.0) / per,
        "recent": row.get("recent", []),
    }
