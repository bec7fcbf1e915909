"""``handrail prompts list|show|activate|rollback``: the active prompt versions, switched at run time.

Workers read the active version at every step, so ``activate`` and
``rollback`` take effect on the next step, without a deploy or a restart.
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
from handrail.tools import default_registry
from handrail_cli.common import JsonOption, console, err_console, print_json_lines, run
from handrail_cli.settings import CliSettings

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="List, show, activate and roll back prompt versions.")


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


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
