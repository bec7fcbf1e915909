"""The Grafana dashboard queries metrics the services really export (or the rules record)."""

from __future__ import annotations

import json

from tests.deploy.helpers import PROJECT_ROOT
from tests.deploy.promql import defined_names, is_defined, metric_names, rule_groups

DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "handrail.json"
RULES = PROJECT_ROOT / "deploy" / "prometheus" / "rules" / "handrail.rules.yml"


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def recorded_names() -> set[str]:
    return {str(rule["record"]) for group in rule_groups(RULES) for rule in group["rules"] if "record" in rule}  # type: ignore[attr-defined]


def test_every_metric_on_the_dashboard_is_exported_or_recorded() -> None:
    defined, recorded = defined_names(), recorded_names()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        for name in names:
            assert is_defined(name, defined) or name in recorded, f"the dashboard queries {name}, which nothing exports"


def test_the_dashboard_shows_what_an_operator_asks_about() -> None:
    queried = {name for expr in dashboard_exprs() for name in metric_names(expr)}
    for wanted in (
        "handrail_model_tokens_total",
        "handrail_model_cost_usd_total",
        "handrail_tool_calls_total",
        "handrail_breaker_state",
        "handrail_reviews_pending",
        "handrail_review_decisions_total",
        "handrail_review_oldest_pending_seconds",
        "handrail_halts_total",
        "handrail_consumer_lag_messages",
        "handrail_dependency_up",
        "workflow:handrail_task_cost_usd:avg_7d",
        "handrail_behaviour_deviations_total",
        "handrail_behaviour_baseline",
    ):
        assert wanted in queried, f"no panel shows {wanted}"


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "handrail-overview"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} == {"prometheus"}
    cells = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"panel {panel['title']!r} is wider than the grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"panel {panel['title']!r} overlaps another"
                cells.add((x, y))


def test_the_promql_name_parser_skips_functions_labels_and_keywords() -> None:
    expr = (
        'sum by (le, service) (rate(handrail_handle_seconds_bucket{service=~"router|x"}[5m])) '
        "/ on (workflow) group_left workflow:cost:avg_7d > 2 * 3600 or vector(0)"
    )
    assert metric_names(expr) == {"handrail_handle_seconds_bucket", "workflow:cost:avg_7d"}
