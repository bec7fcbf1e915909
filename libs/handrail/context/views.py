"""A step's view of the task context: only the parts its JSON Pointers select.

The view keeps each selected value at its place: ``["/input/amount", "/steps/intake/employee/name"]``
over ``{"input": {...}, "steps": {...}}`` is ``{"input": {"amount": ...}, "steps": {"intake":
{"employee": {"name": ...}}}}``. Through an array, the view keeps the selected elements, in their
order. A pointer to nothing (a step's output that is not there yet) selects nothing. A step with an
evaluator is also shown its evaluation (``/evaluations/<step>``) and its last output. The full
context still travels in the envelope, its hash chain unchanged; the agent is shown the view, and
``View.hash`` (sha256 of its RFC 8785 JSON) goes in the step's audit record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handrail.contracts import WorkflowSpec
from handrail.hashing import context_hash


@dataclass(frozen=True)
class View:
    """The context a step's agent is shown, where it came from, and its hash."""

    context: dict[str, Any]
    name: str | None = None
    pointers: tuple[str, ...] | None = None  # None: the whole context

    @property
    def hash(self) -> str:
        """sha256 of the RFC 8785 canonical JSON of what the agent is shown (as ``context_hash``)."""
        return context_hash(self.context)


def view_for(workflow: WorkflowSpec | None, step: str, context: dict[str, Any]) -> View:
    """The view of ``context`` that ``step`` of ``workflow`` declares (all of it when it declares none)."""
    spec = workflow.hop(step) if workflow is not None else None
    declared = spec.context_view if spec is not None else None
    if declared is None:
        return View(context)
    name = declared if isinstance(declared, str) else None
    assert workflow is not None
    assert spec is not None
    pointers = tuple(workflow.views[declared] if isinstance(declared, str) else declared)
    if spec.evaluator is not None:
        # A step its evaluator sends back is shown the critique and its last output, whatever its view.
        pointers += tuple(p for p in (f"/evaluations/{step}", f"/steps/{step}") if p not in pointers)
    return View(project(context, pointers), name, pointers)


def project(document: dict[str, Any], pointers: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The parts of ``document`` that ``pointers`` select, each at its place."""
    if "" in pointers:
        return document
    view: dict[str, Any] = {}
    for pointer in pointers:
        tokens = [_unescape(t) for t in pointer.split("/")[1:]]
        _copy(document, view, tokens)
    dense: dict[str, Any] = _dense(view)
    return dense


def _copy(source: Any, target: dict[Any, Any], tokens: list[str]) -> None:
    """Copy the value at ``tokens`` in ``source`` into ``target`` (arrays become index-keyed dicts here)."""
    head, rest = tokens[0], tokens[1:]
    if isinstance(source, dict):
        if head not in source:
            return
        value = source[head]
        key: Any = head
    elif isinstance(source, list) and head.isdigit() and int(head) < len(source):
        value = source[int(head)]
        key = _Index(int(head))
    else:
        return
    if not rest:
        target[key] = value
        return
    if not isinstance(value, dict | list):
        return
    child = target.get(key)
    if child is value:
        return  # a shorter pointer selected all of it
    if child is None:
        child = {}
        _copy(value, child, rest)
        if child:  # a pointer to nothing leaves no empty parents behind
            target[key] = child
        return
    _copy(value, child, rest)


class _Index(int):
    """An array position in a view under construction."""


def _dense(node: Any) -> Any:
    """Turn the index-keyed dicts back into arrays of the selected elements, in order."""
    if not isinstance(node, dict) or not node:
        return node
    if all(isinstance(k, _Index) for k in node):
        return [_dense(node[k]) for k in sorted(node)]
    return {k: _dense(v) for k, v in node.items()}


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")
