"""How a task submitted with ``workflow: auto`` gets its workflow: ``config/routing.yaml``.

Rules first, in order: a rule whose ``when`` fields all equal the task's input
fields (top level) routes the task to its ``workflow``. Then, when no rule
matched, the classifier: a cheap model under a confidence floor
(``handrail.llm.classifier.ClassifierSpec``). A task naming a workflow is never
routed. The file is optional; without it ``auto`` is refused.

Validated at start-up: an unknown key, an unknown workflow or a bad value stops
the service with a message naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from handrail.contracts.files import load_optional
from handrail.errors import ContractError
from handrail.llm.classifier import ClassifierSpec

ROUTING_FILE = "routing.yaml"
#: The workflow name that asks the router to choose; no workflow may be called this.
AUTO = "auto"


class RoutingRule(BaseModel):
    """Tasks whose input has every ``when`` field equal to its value go to ``workflow``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    when: dict[str, Any] = Field(min_length=1, description="Top-level input field -> the value it must equal.")
    workflow: str

    def matches(self, task_input: Mapping[str, Any]) -> bool:
        """Whether every ``when`` field is in ``task_input`` with an equal value."""
        return all(field in task_input and _same(task_input[field], value) for field, value in self.when.items())


class RoutingConfig(BaseModel):
    """The rules, then the classifier (``None``: rules only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[RoutingRule] = Field(default_factory=list)
    classifier: ClassifierSpec | None = None
    source: str = Field(default=ROUTING_FILE, description="Where it was read from, for messages.")

    def rule_for(self, task_input: Mapping[str, Any]) -> RoutingRule | None:
        """The first rule that matches ``task_input``."""
        return next((rule for rule in self.rules if rule.matches(task_input)), None)


def load_routing(config_dir: Path, workflows: Collection[str]) -> RoutingConfig | None:
    """Read ``config_dir/routing.yaml`` and check it against ``workflows``; ``None`` when there is no file."""
    path = config_dir / ROUTING_FILE
    if AUTO in workflows:
        raise ContractError(f"{config_dir / 'workflows.yaml'}: workflow {AUTO!r}: the name is reserved for routing")
    config = load_optional(path, RoutingConfig, "'rules' and/or 'classifier'")
    if config is None:
        return None
    known = sorted(workflows)
    names = [rule.name for rule in config.rules]
    if len(set(names)) != len(names):
        raise ContractError(f"{path}: field 'rules': rule names repeat")
    for i, rule in enumerate(config.rules):
        if rule.workflow not in workflows:
            raise ContractError(
                f"{path}: field 'rules.{i}.workflow': unknown workflow {rule.workflow!r} "
                f"(workflows.yaml declares {known})"
            )
    default = config.classifier.default_workflow if config.classifier else None
    if default is not None and default not in workflows:
        raise ContractError(
            f"{path}: field 'classifier.default_workflow': unknown workflow {default!r} "
            f"(workflows.yaml declares {known})"
        )
    return config


def _same(found: Any, wanted: Any) -> bool:
    # JSON equality: true is not 1, although Python says so.
    return isinstance(found, bool) == isinstance(wanted, bool) and bool(found == wanted)
