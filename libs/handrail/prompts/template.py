"""Prompt templates: ``string.Template`` with dotted paths, strict both ways.

``${input.employee_id}`` reads ``scope["input"]["employee_id"]``; strings are
inserted as they are, anything else as JSON. ``$$`` is a literal dollar. A
template that does not parse, or names a variable whose root is not in the
step's scope, is refused when it is loaded (so at activation); a path the
task's context lacks is an error when rendered, never an empty string.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handrail.prompts.errors import PromptRenderError, PromptTemplateError

#: What a prompt may refer to: the roots of the scope a worker renders each step with.
VARIABLES = frozenset({"agent", "purpose", "tools", "workflow", "goal", "step", "context", "input", "steps"})


class _DottedTemplate(string.Template):
    # Identifiers may be dotted paths into the scope: ${context.steps.intake.amount_usd}.
    idpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z0-9][_a-z0-9-]*)*)"


@dataclass(frozen=True)
class PromptTemplate:
    """One version of one prompt, checked when built."""

    name: str
    version: str
    text: str
    source: Path | None = None
    _template: _DottedTemplate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_template", _DottedTemplate(self.text))
        self._check()

    @property
    def ref(self) -> str:
        """``name@version``, as agents.yaml and the audit record spell it."""
        return f"{self.name}@{self.version}"

    @property
    def variables(self) -> list[str]:
        """The variables the template uses, in order of first use."""
        return list(self._template.get_identifiers())

    def _where(self) -> str:
        return str(self.source) if self.source else self.ref

    def _check(self) -> None:
        for match in self._template.pattern.finditer(self.text):
            if match.group("invalid") is not None:
                line, column = _position(self.text, match.start())
                raise PromptTemplateError(
                    f"{self._where()}: line {line}, column {column}: '$' must start ${{name}} or $name "
                    "(write $$ for a literal dollar sign)"
                )
        unknown = [v for v in self.variables if v.split(".")[0] not in VARIABLES]
        if unknown:
            raise PromptTemplateError(
                f"{self._where()}: unknown variable(s) {unknown}; a prompt may use {sorted(VARIABLES)}"
            )

    def render(self, scope: Mapping[str, Any]) -> str:
        """The prompt for ``scope``; ``PromptRenderError`` when a path it names is missing."""
        try:
            return self._template.substitute(_Lookup(scope))
        except KeyError as exc:
            raise PromptRenderError(
                f"prompt {self.ref}: the step's context has no value for ${{{exc.args[0]}}}"
            ) from None


class _Lookup(Mapping[str, str]):
    """Dotted-path lookups into the scope, formatted for a prompt."""

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self._scope = scope

    def __getitem__(self, path: str) -> str:
        value: Any = self._scope
        for part in path.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise KeyError(path)
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    def __iter__(self) -> Iterator[str]:
        return iter(self._scope)

    def __len__(self) -> int:
        return len(self._scope)


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def step_scope(
    *, agent: str, purpose: str, tools: list[str], workflow: str, goal: str, step: str, context: Mapping[str, Any]
) -> dict[str, Any]:
    """The scope a worker renders an agent's prompt with, for one step."""
    return {
        "agent": agent,
        "purpose": purpose,
        "tools": ", ".join(tools) or "(none)",
        "workflow": workflow,
        "goal": goal,
        "step": step,
        "context": dict(context),
        "input": context.get("input", {}),
        "steps": context.get("steps", {}),
    }


_VERSION_PARTS = re.compile(r"(\d+)")


def version_sort_key(version: str) -> tuple[Any, ...]:
    """Natural order: 2 < 10, 1.2 < 1.10; numbers before words at each position."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _VERSION_PARTS.split(version) if p)
