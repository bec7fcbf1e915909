"""``--prompt AGENT@VERSION`` and ``--model [AGENT=]NAME``, checked: what ``task fork``, ``replay --live`` and
``golden run`` run some agents' steps with instead of their declared prompt version or model chain."""

from __future__ import annotations

from pathlib import Path

import typer

from handrail.contracts import Contracts
from handrail.llm.models import load_catalogue
from handrail.messages import StepOverrides
from handrail.prompts import PromptError, PromptLibrary, parse_ref

PromptOption = typer.Option(
    None, "--prompt", help="AGENT@VERSION: that agent's steps use this version of its prompt (repeatable)."
)
ModelOption = typer.Option(
    None,
    "--model",
    help="[AGENT=]NAME: a model of models.yaml for that agent's steps, or for all of them (repeatable).",
)


def parse_overrides(
    contracts: Contracts, config_dir: Path, prompts: list[str], models: list[str], agents: list[str], where: str
) -> StepOverrides | None:
    """The overrides asked for, for ``agents`` only (the agents that run ``where``: "after 'intake'", say);
    versions that load, models the catalogue declares; a ``typer.BadParameter`` saying what is wrong."""
    chosen = StepOverrides()
    library = PromptLibrary(config_dir / "prompts")
    for text in prompts:
        agent, sep, version = text.partition("@")
        _check_agent(agent, agents, where, "--prompt", text, sep == "@" and bool(version))
        name = parse_ref(contracts.agents[agent].prompt)[0]
        try:
            library.load(name, version)
        except PromptError as exc:
            raise typer.BadParameter(str(exc), param_hint="--prompt") from None
        chosen.prompts[agent] = version
    catalogue = load_catalogue(config_dir).models
    for text in models:
        agent, sep, name = text.rpartition("=")
        if name not in catalogue:
            raise typer.BadParameter(
                f"{name!r} is not a model of models.yaml ({', '.join(sorted(catalogue))})", param_hint="--model"
            )
        if sep:
            _check_agent(agent, agents, where, "--model", text, True)
        for one in [agent] if sep else agents:
            chosen.models[one] = name
    return None if chosen.empty else chosen


def _check_agent(agent: str, agents: list[str], where: str, hint: str, text: str, well_formed: bool) -> None:
    if not well_formed or not agent:
        form = "AGENT@VERSION" if hint == "--prompt" else "[AGENT=]NAME"
        raise typer.BadParameter(f"{text!r}: expected {form}", param_hint=hint)
    if agent not in agents:
        raise typer.BadParameter(
            f"agent {agent!r} runs no step {where} (those agents: {', '.join(dict.fromkeys(agents))})",
            param_hint=hint,
        )
