"""``handrail prompts list|show|activate|rollback|canary``: the active prompt versions, switched at run time.

Workers read the active version at every step, so ``activate``, ``rollback`` and
a canary take effect on the next step, without a deploy or a restart. A canary
(``handrail.prompts.canary``) sends a share of one agent's tasks to a candidate
version; the circuit-breaker rolls it back when it is worse than live by the
agent's rule (``agents.yaml`` ``canary``).
Activation checks the version first: a missing file or a broken template is
refused here, with the file and the line.
"""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.table import Table

from handrail.contracts import load_contracts
from handrail.errors import ContractError
from handrail.prompts import PromptLibrary, PromptStore, parse_ref
from handrail.prompts.canary import Arm, Canary, judge
from handrail.state.canaries import CanaryCohorts
from handrail.tools import default_registry
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.settings import CliSettings

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="List, show, activate and roll back prompt versions; run a canary of one.")


def _declared(settings: CliSettings) -> dict[str, tuple[str, list[str]]]:
    """Prompt name -> (declared version, agents declaring it), from agents.yaml when it loads."""
    try:
        contracts = load_contracts(settings.config_dir, default_registry().names())
    except ContractError as exc:
        err_console.print(f"[yellow]warning:[/yellow] declared versions unknown: {exc}")
        return {}
    declared: dict[str, tuple[str, list[str]]] = {}
    for agent in contracts.agents.values():
        name, version = parse_ref(agent.prompt)
        declared.setdefault(name, (version, []))[1].append(agent.name)
    return declared


def _with_store(action: Callable[[PromptStore], Awaitable[T]]) -> T:
    settings = CliSettings()

    async def go() -> T:
        redis = settings.redis_client()
        try:
            library = PromptLibrary(settings.config_dir / "prompts")
            return await action(PromptStore(library, redis, settings.redis_prefix))
        finally:
            await redis.aclose()

    return run(go())


@app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """Every prompt: its versions, the active one, and which agents use it."""
    declared = _declared(CliSettings())

    async def go(store: PromptStore) -> list[tuple[str, list[str], str | None]]:
        names = sorted(set(store.library.names()) | set(declared))
        return [(n, store.library.versions(n), await store.active_version(n)) for n in names]

    rows: list[dict[str, Any]] = []
    for name, versions, active in _with_store(go):
        version, agents = declared.get(name, (None, []))
        rows.append(
            {
                "prompt": name,
                "versions": versions,
                "active": active or version,
                "switched": active is not None,
                "declared": version,
                "agents": sorted(agents),
            }
        )
    if as_json:
        print_json_lines(rows)
        return
    table = Table("prompt", "versions", "active", "declared", "agents")
    for row in rows:
        shown = f"{row['active']} ({'switched' if row['switched'] else 'declared'})"
        listed = ", ".join(row["versions"]) or "[red]none[/red]"
        table.add_row(row["prompt"], listed, shown, row["declared"] or "-", ", ".join(row["agents"]))
    console.print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="The prompt's name."),
    version: str = typer.Option(None, "--version", "-v", help="A version other than the active one."),
    as_json: bool = JsonOption,
) -> None:
    """Print a prompt version (the active one by default), its variables and the recent changes."""
    declared = _declared(CliSettings()).get(name, (None, []))[0]

    async def go(store: PromptStore) -> None:
        active = await store.active_version(name)
        chosen = version or active or declared
        if chosen is None:
            versions = store.library.versions(name)
            chosen = versions[-1] if versions else "?"
        template = store.library.load(name, chosen)
        state = "active" if chosen == (active or declared) else "not active"
        if as_json:
            shown = {
                "prompt": name,
                "version": chosen,
                "ref": template.ref,
                "active": state == "active",
                "source": str(template.source),
                "variables": list(template.variables),
                "rollback_to": await store.history(name),
                "changes": await store.changes(name, limit=5),
                "text": template.text,
            }
            print_json_lines([shown])
            return
        console.print(f"[bold]{template.ref}[/bold] ({state}) - {template.source}", highlight=False)
        console.print(f"variables: {', '.join(template.variables) or '(none)'}", highlight=False)
        console.print(f"rollback returns to: {', '.join(await store.history(name)) or '(nothing)'}", highlight=False)
        for change in await store.changes(name, limit=5):
            console.print(f"  {change['at']}  {change['action']} -> {change['version']} by {change['by']}")
        console.print("-" * 40, highlight=False)  # a fixed rule: the console is 10,000 wide in a pipe
        console.print(template.text, markup=False, highlight=False)

    _with_store(go)


@app.command("activate")
def activate(
    name: str = typer.Argument(..., help="The prompt's name."),
    version: str = typer.Argument(..., help="The version to make active."),
) -> None:
    """Make VERSION the active version of NAME (checked first); workers use it from their next step."""
    declared = _declared(CliSettings()).get(name, (None, []))[0]
    switch = _with_store(lambda store: store.activate(name, version, declared=declared, by=_who()))
    if not switch.changed:
        console.print(f"{name}: {version} was already active")
        return
    console.print(f"{name}: {switch.previous or '(declared)'} -> {switch.version}")


@app.command("rollback")
def rollback(name: str = typer.Argument(..., help="The prompt's name.")) -> None:
    """Return NAME to the version that was active before the current one."""
    switch = _with_store(lambda store: store.rollback(name, by=_who()))
    console.print(f"{name}: {switch.previous} -> {switch.version} (rolled back)")


@app.command("canary")
def canary(
    target: str = typer.Argument(..., help="AGENT@VERSION to start a canary of that version; AGENT alone to see it."),
    percent: float = typer.Option(None, "--percent", "-p", help="The share of the agent's tasks the candidate takes."),
    stop: bool = typer.Option(False, "--stop", help="End the agent's canary: every task runs the live version."),
    as_json: bool = JsonOption,
) -> None:
    """Send PERCENT of an agent's tasks to a candidate prompt version, see how it compares, or stop it.
    The circuit-breaker counts each version's tasks over the agent's window (failed or halted,
    rejected, sent to a person, cost) and rolls the candidate back by itself when it is worse than
    live by the agent's rule (agents.yaml canary); the rollback is on the control topic and the
    audit trail. Activating a version ends a canary; starting one again replaces it. Exit codes:
    0 done or shown, 2 a usage error (an unknown agent, a bad share, no canary to stop)."""
    settings = CliSettings()
    agent_name, _, version = target.partition("@")
    contracts = load_contracts(settings.config_dir, default_registry().names())
    agent = contracts.agents.get(agent_name)
    if agent is None:
        known = ", ".join(sorted(contracts.agents))
        raise typer.BadParameter(f"agent {agent_name!r} is not in agents.yaml (known: {known})", param_hint="TARGET")
    name, declared = parse_ref(agent.prompt)
    if version and stop:
        raise typer.BadParameter("takes the agent alone, not AGENT@VERSION", param_hint="--stop")
    if version and percent is None:
        raise typer.BadParameter("a canary needs the share of the agent's tasks it takes", param_hint="--percent")
    if not version and percent is not None:
        raise typer.BadParameter("needs a candidate: AGENT@VERSION", param_hint="--percent")

    async def go(store: PromptStore) -> dict[str, Any] | None:
        if version:
            live = await store.active_version(name) or declared
            try:
                started = Canary.start(agent_name, name, version, live, percent, _who())
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--percent / VERSION") from None
            replaced = await store.start_canary(started)
            note = f" (replacing the canary of {replaced.version})" if replaced is not None else ""
            console.print(f"{name}: {percent:g}% of {agent_name}'s tasks run {version}, the rest {live}{note}")
            return None
        running = await store.canary(name, agent_name, declared=declared)
        if stop:
            if running is None or not await store.end_canary(running, "canary.stopped", by=_who()):
                raise typer.BadParameter(f"agent {agent_name!r} has no canary running", param_hint="--stop")
            console.print(
                f"{name}: canary of {running.version} for {agent_name} stopped; every task runs {running.live}"
            )
            return None
        if running is None:
            return {"agent": agent_name, "prompt": name, "canary": None, "changes": await store.changes(name, 5)}
        figures = await CanaryCohorts(store.redis, settings.redis_prefix).figures(running, agent.canary.window_s)
        worse = judge(figures[Arm.CANDIDATE], figures[Arm.LIVE], agent.canary)
        return {
            "agent": agent_name,
            "prompt": name,
            "canary": {"candidate": running.version, "live": running.live, "percent": running.percent,
                       "by": running.by, "at": running.at, "id": running.id},
            "window_s": agent.canary.window_s,
            "min_tasks": agent.canary.min_tasks,
            "candidate": figures[Arm.CANDIDATE].as_dict(),
            "live": figures[Arm.LIVE].as_dict(),
            "verdict": "too few tasks" if worse is None else "worse" if worse else "no worse",
            "worse": [w.describe() for w in worse or []],
        }  # fmt: skip

    shown = _with_store(go)
    if shown is None:
        return
    if as_json:
        print_json_lines([shown])
        return
    running = shown["canary"]
    if running is None:
        console.print(f"agent {agent_name} has no canary of prompt {name} running", highlight=False)
        for change in shown["changes"]:
            if str(change["action"]).startswith("canary."):
                why = f": {change['reason']}" if change.get("reason") else ""
                console.print(f"  {change['at']}  {change['action']} {change['version']} by {change['by']}{why}")
        return
    console.print(
        f"{name}: {running['percent']:g}% of {agent_name}'s tasks run {running['candidate']} against "
        f"{running['live']} (since {running['at']}, by {running['by']})",
        highlight=False,
    )
    table = Table("version", "tasks", "failure rate", "rejection rate", "review rate", "mean cost (USD)")
    for arm in ("candidate", "live"):
        row = shown[arm]
        table.add_row(running[arm], str(row["tasks"]), f"{row['failure_rate']:.1%}", f"{row['rejection_rate']:.1%}",
                      f"{row['review_rate']:.1%}", f"{row['mean_cost_usd']:.6f}")  # fmt: skip
    console.print(table)
    console.print(
        f"over the last {shown['window_s']:g} s: {shown['verdict']} ({', '.join(shown['worse'])})"
        if shown["worse"]
        else f"over the last {shown['window_s']:g} s: {shown['verdict']}",
        highlight=False,
    )


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
