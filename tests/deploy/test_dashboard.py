"""The Grafana dashboard queries metrics the services really export."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY
from tests.deploy.helpers import PROJECT_ROOT

import handrail.metrics  # noqa: F401 - registers the handrail_* metrics
import handrail_review.metrics  # noqa: F401 - and the review service's

DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "handrail.json"
#: Suffixes Prometheus adds to a metric family's samples.
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def queried_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return {name for expr in exprs for name in re.findall(r"\b(handrail_[a-z_]+)", expr)}


def test_every_handrail_metric_on_the_dashboard_is_exported() -> None:
    exported = exported_names()
    for name in queried_names():
        base = next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)
        assert name in exported or base in exported, f"the dashboard queries {name}, which no service exports"


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "handrail-overview"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} == {"prometheus"}
    assert len(queried_names()) >= 4
