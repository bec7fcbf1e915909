"""The checked-in JSON Schemas in schemas/ match the models."""

from __future__ import annotations

from pathlib import Path

import jsonschema

from handrail.messages import TaskSubmitted
from handrail.schemas import render, stale

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_schemas_are_current() -> None:
    assert stale(ROOT / "schemas") == [], "run `make schemas` and commit the result"


def test_stale_detects_a_changed_schema(tmp_path: Path) -> None:
    for name, text in render().items():
        (tmp_path / name).write_text(text)
    assert stale(tmp_path) == []
    victim = tmp_path / "task-result.schema.json"
    victim.write_text(victim.read_text().replace('"cost_usd"', '"cost"', 1))
    assert stale(tmp_path) == ["task-result.schema.json"]


def test_schema_accepts_what_the_model_accepts_and_rejects_the_rest() -> None:
    import json

    schema = json.loads(render()["task-submitted.schema.json"])
    good = TaskSubmitted(task_id="t-1", workflow="w", input={"a": 1}).model_dump(mode="json", exclude_none=True)
    jsonschema.validate(good, schema)
    for bad in ({**good, "task_id": ""}, {**good, "inputs": {}}, {k: v for k, v in good.items() if k != "workflow"}):
        try:
            jsonschema.validate(bad, schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad}")
