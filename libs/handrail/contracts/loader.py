"""Load and cross-check ``agents.yaml`` and ``workflows.yaml`` (and the optional ``autonomy.yaml``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml
from pydantic import BaseModel, ValidationError

from handrail.contracts.agents import AgentSpec
from handrail.contracts.graduation import GraduationRule, load_graduation
from handrail.contracts.workflows import WorkflowSpec
from handrail.errors import ContractError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Contracts:
    """Every agent and workflow, validated and cross-checked."""

    agents: Mapping[str, AgentSpec]
    workflows: Mapping[str, WorkflowSpec]
    #: When an agent earns more autonomy or loses some (``autonomy.yaml``); None: no rule.
    graduation: GraduationRule | None = None

    def agent(self, name: str) -> AgentSpec:
        """Return agent ``name``, or raise ContractError."""
        try:
            return self.agents[name]
        except KeyError:
            raise ContractError(f"unknown agent {name!r}; agents.yaml declares {sorted(self.agents)}") from None

    def agent_workflows(self) -> list[tuple[str, str]]:
        """Every (agent, workflow) where the agent runs a step of the workflow, sorted."""
        return sorted({(agent, w.name) for w in self.workflows.values() for agent in w.agents})


def load_contracts(config_dir: Path, known_tools: set[str]) -> Contracts:
    """Read ``config_dir/agents.yaml`` and ``config_dir/workflows.yaml`` and check them together."""
    agents_file = config_dir / "agents.yaml"
    workflows_file = config_dir / "workflows.yaml"
    agents = _load_section(agents_file, "agents", AgentSpec, "agent")
    workflows = _load_section(workflows_file, "workflows", WorkflowSpec, "workflow")

    mcp_tools = {name for agent in agents.values() for server in agent.mcp_servers for name in server.qualified_names()}
    for agent in agents.values():
        own_mcp_tools = {name for server in agent.mcp_servers for name in server.qualified_names()}
        for tool in agent.tools:
            if tool not in known_tools and tool not in own_mcp_tools:
                raise ContractError(
                    f"{agents_file}: agent {agent.name!r}: field 'tools': unknown tool {tool!r} "
                    f"(registered tools: {sorted(known_tools)})"
                )
    for workflow in workflows.values():
        for i, step in enumerate(workflow.steps):
            bound: dict[str, str | None] = {"agent": step.agent}
            if step.vote is not None:
                bound = {"vote.agent": step.vote.agent}
            elif step.parallel is not None:
                bound = {f"parallel.{name}.agent": branch.agent for name, branch in step.parallel.items()}
            for field, name in bound.items():
                if name not in agents:
                    raise ContractError(
                        f"{workflows_file}: workflow {workflow.name!r}: field 'steps.{i}.{field}': "
                        f"unknown agent {name!r} (agents.yaml declares {sorted(agents)})"
                    )
            _check_schema(workflows_file, workflow.name, f"steps.{i}.output_schema", step.output_schema)
            if step.evaluator is not None and step.evaluator.agent not in (None, *agents):
                raise ContractError(
                    f"{workflows_file}: workflow {workflow.name!r}: field 'steps.{i}.evaluator.agent': "
                    f"unknown agent {step.evaluator.agent!r} (agents.yaml declares {sorted(agents)})"
                )
            if step.evaluator is not None and step.evaluator.schema_ is not None:
                _check_schema(workflows_file, workflow.name, f"steps.{i}.evaluator.schema", step.evaluator.schema_)
        _check_schema(workflows_file, workflow.name, "input_schema", workflow.input_schema)
        names = [s.name for s in workflow.steps]
        if len(set(names)) != len(names):
            raise ContractError(f"{workflows_file}: workflow {workflow.name!r}: field 'steps': step names repeat")
        for i, rule in enumerate(workflow.escalations):
            if rule.step is not None and rule.step not in names:
                raise ContractError(
                    f"{workflows_file}: workflow {workflow.name!r}: field 'escalations.{i}.step': "
                    f"unknown step {rule.step!r} (the workflow has {names})"
                )
            if rule.tool is not None and rule.tool not in known_tools | mcp_tools:
                raise ContractError(
                    f"{workflows_file}: workflow {workflow.name!r}: field 'escalations.{i}.tool': "
                    f"unknown tool {rule.tool!r} (registered tools: {sorted(known_tools)})"
                )
        rule_names = [r.name for r in workflow.escalations]
        if len(set(rule_names)) != len(rule_names):
            raise ContractError(f"{workflows_file}: workflow {workflow.name!r}: field 'escalations': rule names repeat")
    return Contracts(agents=agents, workflows=workflows, graduation=load_graduation(config_dir))


def _load_section(path: Path, section: str, model: type[M], what: str) -> dict[str, M]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ContractError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get(section), dict):
        raise ContractError(f"{path}: expected a mapping with a top-level {section!r} mapping")
    unknown = set(raw) - {section}
    if unknown:
        raise ContractError(f"{path}: unknown top-level keys {sorted(unknown)}")
    entries: dict[str, M] = {}
    for name, body in raw[section].items():
        if not isinstance(body, dict):
            raise ContractError(f"{path}: {what} {name!r}: expected a mapping")
        try:
            entries[name] = model.model_validate({**body, "name": name})
        except ValidationError as exc:
            raise ContractError(f"{path}: {what} {name!r}: {_describe(exc)}") from None
    return entries


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "(entry)"
        parts.append(f"field {field!r}: {error['msg']}")
    return "; ".join(parts)


def _check_schema(path: Path, workflow: str, field: str, schema: dict[str, Any]) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ContractError(
            f"{path}: workflow {workflow!r}: field {field!r}: not a valid JSON Schema: {exc.message}"
        ) from None
