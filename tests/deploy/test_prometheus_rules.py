"""The Prometheus rules: real metric names, a runbook section per alert, mounted where compose runs them.

``make lint`` runs promtool on the file (``check rules``) and its unit tests (``test rules``).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from tests.deploy.helpers import PROJECT_ROOT
from tests.deploy.promql import defined_names, is_defined, metric_names, rule_groups

PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "handrail.rules.yml"
RUNBOOK = PROJECT_ROOT / "docs" / "runbook.md"


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups(RULES) for rule in group["rules"]]  # type: ignore[attr-defined]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """The anchors of the document's headings, as a Markdown renderer makes them."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_expression_reads_only_metrics_the_services_define_or_the_rules_record() -> None:
    defined = defined_names()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, f"no metric found in {rule['expr']!r}"
        for name in names:
            assert is_defined(name, defined) or name in recorded, (
                f"{rule.get('alert') or rule.get('record')} reads {name}, which no service defines"
            )


def test_the_alerts_cover_what_an_operator_is_paged_for() -> None:
    names = {alert["alert"] for alert in alerts()}
    assert names >= {
        "HandrailTaskCostAboveBaseline",
        "HandrailLoopHalts",
        "HandrailBudgetHalts",
        "HandrailBreakerOpen",
        "HandrailDeadLetterRate",
        "HandrailReviewBacklogOld",
        "HandrailConsumerLag",
        "HandrailRedisUnreachable",
        "HandrailKafkaUnreachable",
        "HandrailAgentUnlikeItsBaseline",
    }


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section() -> None:
    sections = anchors(RUNBOOK.read_text())
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        url = alert["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md" and anchor == name.lower(), f"{name}: runbook_url {url}"
        assert anchor in sections, f"{name}: docs/runbook.md has no section #{anchor}"


def test_the_cost_alert_compares_with_a_recorded_baseline() -> None:
    recorded = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    assert "[7d]" in recorded["workflow:handrail_task_cost_usd:avg_7d"]
    cost = next(alert for alert in alerts() if alert["alert"] == "HandrailTaskCostAboveBaseline")
    assert "2 * workflow:handrail_task_cost_usd:avg_7d" in cost["expr"]


def test_compose_mounts_the_rules_and_prometheus_loads_them() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert "rules/*.rules.yml" in config["rule_files"]
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in volumes
