"""config/autonomy.yaml: the shipped rule loads with the contracts, a bad one names the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from handrail.contracts import Autonomy, load_contracts
from handrail.contracts.graduation import load_graduation
from handrail.errors import ContractError
from handrail.tools import default_registry

CONFIG = Path(__file__).resolve().parents[3] / "config"
TOOLS = default_registry().names()


def test_the_shipped_rule_recommends_only_and_loads_with_the_contracts() -> None:
    rule = load_contracts(CONFIG, TOOLS).graduation
    assert rule is not None and rule.auto is False
    promotion = rule.promote[Autonomy.APPROVAL_GATES]
    assert (promotion.min_reviews, promotion.min_approved_unchanged_ratio) == (200, 0.98)
    assert rule.demote is not None and rule.demote.limits() == {"rejected": 0.05}
    assert rule.source.endswith("autonomy.yaml")


def test_without_the_file_there_is_no_rule(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    (config / "autonomy.yaml").unlink()
    assert load_graduation(config) is None
    assert load_contracts(config, TOOLS).graduation is None


def test_a_file_of_comments_only_is_a_rule_that_never_recommends(tmp_path: Path) -> None:
    (tmp_path / "autonomy.yaml").write_text("# nothing yet\n")
    rule = load_graduation(tmp_path)
    assert rule is not None and rule.promote == {} and rule.demote is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto: yes please\n", "field 'auto'"),
        ("autoo: true\n", "field 'autoo': Extra inputs are not permitted"),
        (
            "promote: {approval-gate: {min_reviews: 2, min_approved_unchanged_ratio: 0.9}}\n",
            "field 'promote.approval-gate",
        ),
        ("promote: {approval-gates: {min_reviews: 2, min_approved_unchanged_ratio: 1.5}}\n",
         "field 'promote.approval-gates.min_approved_unchanged_ratio'"),
        ("promote: {approval-gates: {min_reviews: 0, min_approved_unchanged_ratio: 0.9}}\n",
         "field 'promote.approval-gates.min_reviews'"),
        (
            "promote: {approval-gates: {min_reviews: 2}}\n",
            "field 'promote.approval-gates.min_approved_unchanged_ratio': Field required",
        ),
        ("promote: {audit-based: {min_reviews: 2, min_approved_unchanged_ratio: 0.9}}\n",
         "field 'promote.audit-based': there is no level above audit-based"),
        ("window_reviews: 10\npromote: {approval-gates: {min_reviews: 20, min_approved_unchanged_ratio: 0.9}}\n",
         "field 'promote.approval-gates.min_reviews': 20 is more than 'window_reviews' (10)"),
        ("demote: {min_reviews: 5}\n", "field 'demote': set at least one of"),
        ("demote: {max_rejected_ratio: -0.1}\n", "field 'demote.max_rejected_ratio'"),
        ("window_reviews: 10\ndemote: {min_reviews: 11, max_rejected_ratio: 0.1}\n", "field 'demote.min_reviews'"),
        ("source: elsewhere\n", "unknown top-level keys ['source']"),
        ("- auto\n", "expected a mapping"),
        ("auto: [\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_rule_stops_start_up_naming_the_file_and_the_field(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    (config / "autonomy.yaml").write_text(text)
    with pytest.raises(ContractError) as caught:
        load_contracts(config, TOOLS)
    assert str(caught.value).startswith(f"{config / 'autonomy.yaml'}: ")
    assert expected in str(caught.value)


def test_the_shipped_file_is_what_the_readme_documents() -> None:
    raw = yaml.safe_load((CONFIG / "autonomy.yaml").read_text())
    assert set(raw) == {"auto", "window_reviews", "promote", "demote"}
