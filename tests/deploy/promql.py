"""The metric names a PromQL expression reads, roughly, and the ones the services define."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

#: Every module that defines Prometheus metrics: importing them registers the metrics.
METRICS_MODULES = (
    "handrail.metrics",
    "handrail_review.metrics",
    "handrail_review.projector",
    "handrail_router.routing",
    "handrail_circuit_breaker.handlers",
    "handrail_validator.handlers",
)
#: Suffixes Prometheus adds to a metric family's samples.
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names ``expr`` selects; functions, keywords and labels left out."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _GROUPING.sub("", text)
    return {name for name in _NAME.findall(text) if name not in _KEYWORDS and not re.fullmatch(r"[\d.e+-]+", name)}


def defined_names() -> set[str]:
    """Every metric family and sample name the services register."""
    for module in METRICS_MODULES:
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def is_defined(name: str, defined: set[str]) -> bool:
    base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
    return name in defined or base in defined


def rule_groups(path: Path) -> list[dict[str, object]]:
    groups: list[dict[str, object]] = yaml.safe_load(path.read_text())["groups"]
    return groups
