"""A step's view of the task context: only what its JSON Pointers select, each at its place."""

from __future__ import annotations

from typing import Any

from handrail.context import view_for
from handrail.context.views import project
from handrail.contracts import StepSpec, WorkflowSpec
from handrail.hashing import context_hash

CONTEXT: dict[str, Any] = {
    "input": {"employee_id": "E1", "amount": 7, "a/b": {"~c": 1}},
    "steps": {"intake": {"employee": {"name": "Ada", "salary": 9}, "lines": [{"x": 1}, {"x": 2}, {"x": 3}]}},
}


def test_pointers_select_values_at_their_place() -> None:
    assert project(CONTEXT, ["/input/amount", "/steps/intake/employee/name"]) == {
        "input": {"amount": 7},
        "steps": {"intake": {"employee": {"name": "Ada"}}},
    }


def test_escapes_arrays_missing_and_overlapping_pointers() -> None:
    assert project(CONTEXT, ["/input/a~1b/~0c"]) == {"input": {"a/b": {"~c": 1}}}
    assert project(CONTEXT, ["/steps/intake/lines/2/x", "/steps/intake/lines/0"]) == {
        "steps": {"intake": {"lines": [{"x": 1}, {"x": 3}]}}
    }
    assert project(CONTEXT, ["/steps/decide/output", "/input/amount/deeper", "/steps/intake/lines/9"]) == {}
    assert project(CONTEXT, ["/input/amount", "/input"]) == {"input": CONTEXT["input"]}
    assert project(CONTEXT, ["/input", "/input/amount"]) == {"input": CONTEXT["input"]}
    assert project(CONTEXT, [""]) == CONTEXT


def test_the_view_leaves_the_context_it_reads_unchanged() -> None:
    before = context_hash(CONTEXT)
    project(CONTEXT, ["/input", "/input/amount", "/steps/intake/lines/1"])
    assert context_hash(CONTEXT) == before


def test_a_step_gets_its_named_view_its_pointers_or_everything() -> None:
    schema = {"type": "object"}
    workflow = WorkflowSpec(
        name="w",
        goal="g",
        input_schema=schema,
        views={"money": ["/input/amount"]},
        steps=[
            StepSpec(name="a", agent="x", output_schema=schema, context_view="money"),
            StepSpec(name="b", agent="x", output_schema=schema, context_view=["/steps/intake/employee/name"]),
            StepSpec(name="c", agent="x", output_schema=schema),
        ],
    )
    named = view_for(workflow, "a", CONTEXT)
    assert (named.name, named.pointers, named.context) == ("money", ("/input/amount",), {"input": {"amount": 7}})
    assert named.hash == context_hash({"input": {"amount": 7}})
    listed = view_for(workflow, "b", CONTEXT)
    assert listed.name is None and listed.context == {"steps": {"intake": {"employee": {"name": "Ada"}}}}
    whole = view_for(workflow, "c", CONTEXT)
    assert whole.pointers is None and whole.context is CONTEXT and whole.hash == context_hash(CONTEXT)
    assert view_for(None, "anything", CONTEXT).context is CONTEXT
