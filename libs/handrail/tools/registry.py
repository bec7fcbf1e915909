"""The tool registry: name, JSON Schema in and out, side-effect and approval flags.

A call to an unknown tool, a tool the agent may not use, or arguments that fail
the schema gets a structured ``ToolCallError`` back to the model, never an
exception that kills the step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

import jsonschema

from handrail.errors import ContractError
from handrail.tools.kinds import ToolErrorKind


class ToolFailure(Exception):
    """Raised by a tool when a well-formed call cannot succeed, saying what ``kind`` of failure it is.

    Raising it declares the call did nothing (a side effect's claim is released, and a ``transient``
    one may be tried again under the same idempotency key). The default kind, ``invalid_input``, is
    a call that cannot succeed with these arguments (no such employee, say): the message goes back to
    the model as a ``tool_failed`` error it can act on. ``handrail.tools.kinds`` says what each kind
    leads to.
    """

    def __init__(self, message: str, *, kind: ToolErrorKind | str = ToolErrorKind.INVALID_INPUT) -> None:
        super().__init__(message)
        self.kind = ToolErrorKind(kind)


ToolFn = Callable[[dict[str, Any], "ToolContext"], Awaitable[dict[str, Any]]]
#: Asks a side effect's target whether the effect with ``ctx.idempotency_key`` happened: its result, or None.
LookupFn = Callable[["ToolContext"], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class ToolContext:
    """Who is calling: tools with side effects pass ``idempotency_key`` on to the systems they change."""

    task_id: str
    step: str
    idempotency_key: str


@dataclass(frozen=True)
class ToolSpec:
    """What a model is told about a tool, and what the platform enforces."""

    name: str
    description: str
    args_schema: dict[str, Any]
    result_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    side_effect: bool = False
    requires_approval: bool = False  # a person approves each call before it runs
    #: What a reviewer's rejection of a call does: ``end`` the task, or ``refuse`` the call (the model is told).
    on_reject: Literal["end", "refuse"] = "end"
    cost_usd: float = 0.0  # what one call costs, reserved against the budget before it runs


@dataclass(frozen=True)
class Tool:
    """A registered tool: its spec and the coroutine that runs it."""

    spec: ToolSpec
    run: ToolFn
    #: For a side effect: how to ask its target, after a crash left the outcome in doubt, whether it
    #: happened. Without one such a call is never repeated and the task waits for a person.
    lookup: LookupFn | None = None


@dataclass(frozen=True)
class ToolCallError:
    """A structured error the model can act on: what was wrong and what would be right."""

    code: str  # unknown_tool | tool_not_allowed | invalid_arguments | tool_failed | invalid_result
    tool: str
    message: str
    allowed_tools: list[str] = field(default_factory=list)
    #: For ``tool_failed``: what kind of failure (``handrail.tools.kinds``), and after how many attempts.
    kind: ToolErrorKind | None = None
    attempts: int | None = None

    def as_observation(self) -> dict[str, Any]:
        """The error as the tool message the model sees."""
        body: dict[str, Any] = {"error": {"code": self.code, "tool": self.tool, "message": self.message}}
        if self.allowed_tools:
            body["error"]["allowed_tools"] = self.allowed_tools
        if self.kind is not None:
            body["error"]["kind"] = self.kind.value
        if self.attempts is not None:
            body["error"]["attempts"] = self.attempts
        return body


class ToolRegistry:
    """Every tool an agent could be allowed to call."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}  # compiled once, not per call
        self._result_validators: dict[str, jsonschema.Draft202012Validator] = {}
        self._origins: dict[str, str] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool, origin: str | None = None) -> None:
        """Add ``tool`` (``origin``: the plugin that registered it); its schemas are checked now, not on first use."""
        jsonschema.Draft202012Validator.check_schema(tool.spec.args_schema)
        jsonschema.Draft202012Validator.check_schema(tool.spec.result_schema)
        if tool.spec.name in self._tools:
            raise ValueError(f"tool {tool.spec.name!r} is registered twice")
        self._tools[tool.spec.name] = tool
        self._validators[tool.spec.name] = jsonschema.Draft202012Validator(tool.spec.args_schema)
        self._result_validators[tool.spec.name] = jsonschema.Draft202012Validator(tool.spec.result_schema)
        if origin is not None:
            self._origins[tool.spec.name] = origin

    def origin(self, name: str) -> str | None:
        """Where tool ``name`` came from: ``plugin:<entry point>`` for an installed plugin's, else None."""
        return self._origins.get(name)

    def names(self) -> set[str]:
        """Names of every registered tool."""
        return set(self._tools)

    def specs(self, allowed: Iterable[str]) -> list[ToolSpec]:
        """Specs of the ``allowed`` tools, as offered to a model."""
        return [self._tools[n].spec for n in allowed if n in self._tools]

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, if registered."""
        return self._tools.get(name)

    def check_call(self, name: str, args: Any, allowed: list[str]) -> ToolCallError | None:
        """Return why the call may not run, or None when it may."""
        tool = self._tools.get(name)
        if tool is None and name in allowed:  # an MCP tool whose server has not been listed yet
            return ToolCallError("tool_unavailable", name, f"{name} is not available yet; try later", sorted(allowed))
        if tool is None:
            return ToolCallError("unknown_tool", name, f"there is no tool named {name!r}", sorted(allowed))
        if name not in allowed:
            return ToolCallError("tool_not_allowed", name, f"this agent may not call {name!r}", sorted(allowed))
        if not isinstance(args, dict):
            return ToolCallError("invalid_arguments", name, "arguments must be a JSON object")
        errors = sorted(self._validators[name].iter_errors(args), key=str)
        if errors:
            return ToolCallError("invalid_arguments", name, _problems(errors))
        return None

    def check_result(self, name: str, result: Any) -> ToolCallError | None:
        """Why ``result`` may not reach the model or the next step (it breaks the tool's result schema), or None."""
        errors = sorted(self._result_validators[name].iter_errors(result), key=str)
        if errors:
            return ToolCallError(
                "invalid_result", name, f"the tool returned a result that breaks its schema: {_problems(errors)}"
            )
        return None


#: Enough of a schema violation for the model to act on, without echoing a huge result back.
_MAX_PROBLEMS = 5


def _problems(errors: list[jsonschema.ValidationError]) -> str:
    shown = "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}" for e in errors[:_MAX_PROBLEMS]
    )
    return shown + (f"; and {len(errors) - _MAX_PROBLEMS} more" if len(errors) > _MAX_PROBLEMS else "")


#: The entry point group installed packages register their in-process tools in (``pyproject.toml``:
#: ``[project.entry-points."handrail.tools"] name = "package.module:tools"``).
TOOLS_ENTRY_POINTS = "handrail.tools"


def default_registry(data_dir: Path | None = None) -> ToolRegistry:
    """The in-process tools the installed packages register: each entry point of ``handrail.tools`` names
    a function ``tools(data_dir) -> Iterable[Tool]`` (the demo's expense tools are one such package).

    ``data_dir`` is where tools with local side effects keep their files. A plugin that does not load,
    or a tool name two plugins both register, is a ``ContractError`` naming the plugin.
    """
    registry = ToolRegistry()
    for point in sorted(entry_points(group=TOOLS_ENTRY_POINTS), key=lambda p: p.name):
        where = f"tool plugin {point.name!r} ({point.value})"
        try:
            provide = point.load()
            tools = list(provide(data_dir or Path(".run/data")))
        except Exception as exc:  # a plugin's own failure, whatever it is, is reported as that plugin's
            raise ContractError(f"{where} did not load: {type(exc).__name__}: {exc}") from exc
        for tool in tools:
            if not isinstance(tool, Tool):
                raise ContractError(f"{where} gave {type(tool).__name__}, not a handrail.tools.Tool")
            try:
                registry.register(tool, f"plugin:{point.name}")
            except (ValueError, jsonschema.SchemaError) as exc:
                raise ContractError(f"{where}: {exc}") from exc
    return registry
