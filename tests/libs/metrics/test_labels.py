"""Bounded label values: only what the contracts, the catalogue and the fixed enums name, else unknown."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from handrail.metrics import TASKS_FINISHED, labels

ROOT = Path(__file__).resolve().parents[3]
#: Where the code sets an error type: a class attribute, a keyword, a halt or a stop the guard emits.
_ERROR_TYPE_SITES = (
    re.compile(r'error_type\s*=\s*"([a-z_]+)"'),
    re.compile(r'_halted\([^()]*(?:\([^()]*\)[^()]*)*,\s*"([a-z_]+)"\s*\)'),
    re.compile(r'_emit_stop\([^)]*"(?:halted|short_circuited)",\s*"([a-z_]+)"\)'),
    re.compile(r'Verdict\.[A-Z_]+:\s*"([a-z_]+)"'),
)


@pytest.fixture(autouse=True)
def declared() -> Iterator[None]:
    before = labels.declare(
        workflows=["expense-approval"], agents=["expense-intake"], tools=["lookup_employee"], models=["scripted"]
    )
    yield
    labels.restore(before)


def test_declared_names_are_kept_and_anything_else_is_unknown() -> None:
    assert labels.workflow("expense-approval") == "expense-approval"
    assert labels.workflow("nope") == labels.workflow(None) == "unknown"
    assert labels.agent("expense-intake") == "expense-intake" and labels.agent("mallory") == "unknown"
    assert labels.tool("lookup_employee") == "lookup_employee" and labels.tool("wire_money") == "unknown"
    assert labels.model("scripted") == "scripted" and labels.model("gpt-9") == "unknown"
    assert labels.error_type("loop_detected") == "loop_detected" and labels.error_type("x" * 40) == "unknown"


def test_a_breaker_or_call_name_is_bounded_by_its_kind() -> None:
    assert labels.scoped("tool", "lookup_employee") == "lookup_employee"
    assert labels.scoped("model", "lookup_employee") == "unknown"
    assert labels.scoped("agent", "expense-intake") == "expense-intake"
    assert labels.scoped("planet", "expense-intake") == "unknown"
    assert labels.call("model_call", "scripted") == "scripted" and labels.call("tool_call", "scripted") == "unknown"


def test_the_catalogue_adds_models_to_what_the_contracts_declared() -> None:
    labels.declare_models(["claude-haiku"])
    assert labels.model("claude-haiku") == "claude-haiku" and labels.model("scripted") == "scripted"
    assert labels.workflow("expense-approval") == "expense-approval"


def test_a_task_of_an_unknown_workflow_is_counted_as_unknown() -> None:
    invented = "payroll-typo"
    before = (
        REGISTRY.get_sample_value("handrail_tasks_finished_total", {"workflow": "unknown", "status": "rejected"}) or 0.0
    )
    TASKS_FINISHED.labels(labels.workflow(invented), "rejected").inc()
    after = REGISTRY.get_sample_value("handrail_tasks_finished_total", {"workflow": "unknown", "status": "rejected"})
    assert after == before + 1
    assert (
        REGISTRY.get_sample_value("handrail_tasks_finished_total", {"workflow": invented, "status": "rejected"}) is None
    )


def test_every_error_type_the_code_sets_is_a_known_label_value() -> None:
    found: dict[str, str] = {}
    for path in [*ROOT.glob("libs/handrail/**/*.py"), *ROOT.glob("services/*/*/*.py")]:
        text = path.read_text()
        for pattern in _ERROR_TYPE_SITES:
            for value in pattern.findall(text):
                found.setdefault(value, str(path.relative_to(ROOT)))
    assert len(found) > 30, "the scan found too few error types: has the code changed shape?"
    missing = {value: where for value, where in found.items() if value not in labels.ERROR_TYPES}
    assert not missing, f"error types not in handrail.metrics.labels.ERROR_TYPES (counted as unknown): {missing}"
