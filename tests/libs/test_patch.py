"""JSON Patch between a hop's parent and new context."""

from __future__ import annotations

import itertools

from handrail.patch import apply, diff


def test_diff_records_an_added_step_output() -> None:
    parent = {"input": {"a": 1}, "steps": {}}
    new = {"input": {"a": 1}, "steps": {"intake": {"x": 2}}}
    assert diff(parent, new) == [{"op": "add", "path": "/steps/intake", "value": {"x": 2}}]


def test_apply_replays_lineage_from_the_first_context() -> None:
    hops = [
        {"input": {"a": 1}, "steps": {}},
        {"input": {"a": 1}, "steps": {"one": {"v": 1}}},
        {"input": {"a": 1}, "steps": {"one": {"v": 1}, "two": {"v": [1, 2]}}},
        {"input": {"a": 2}, "steps": {"one": {"v": 1}, "two": {"v": [1, 3]}}},
    ]
    patches = [diff(a, b) for a, b in itertools.pairwise(hops)]
    replayed = hops[0]
    for ops in patches:
        replayed = apply(replayed, ops)
    assert replayed == hops[-1]


def test_apply_does_not_mutate_its_input() -> None:
    parent = {"steps": {}}
    apply(parent, [{"op": "add", "path": "/steps/x", "value": 1}])
    assert parent == {"steps": {}}
