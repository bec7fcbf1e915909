"""Context views and section budgets in agents.yaml and workflows.yaml: bad ones say exactly what is wrong."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from handrail.contracts import load_contracts
from handrail.contracts.context import Policy
from handrail.errors import ContractError
from handrail.llm.models import load_catalogue
from handrail.tools import default_registry

CONFIG = Path(__file__).resolve().parents[3] / "config"
TOOLS = default_registry().names()
Change = Callable[[dict[str, Any]], object]


def _config(tmp_path: Path, file: str, change: Change) -> Path:
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    data = yaml.safe_load((config / file).read_text())
    change(data)
    (config / file).write_text(yaml.safe_dump(data))
    return config


def _intake(d: dict[str, Any]) -> dict[str, Any]:
    step: dict[str, Any] = d["workflows"]["expense-approval"]["steps"][0]
    return step


def test_views_and_budgets_load(tmp_path: Path) -> None:
    def declare(d: dict[str, Any]) -> None:
        d["workflows"]["expense-approval"]["views"] = {"claim": ["/input/amount", "/input/currency", "", "/a~1b/~0c"]}
        _intake(d)["context_view"] = "claim"
        d["workflows"]["expense-approval"]["steps"][1]["context_view"] = ["/steps/intake"]

    config = _config(tmp_path, "workflows.yaml", declare)
    workflow = load_contracts(config, TOOLS).workflows["expense-approval"]
    assert workflow.steps[0].context_view == "claim" and workflow.steps[1].context_view == ["/steps/intake"]
    agents = _config(
        tmp_path / "b",
        "agents.yaml",
        lambda d: d["agents"]["expense-intake"].update(
            context={"window_tokens": 8000, "sections": {"history": 2000}, "policy": "summarise"}
        ),
    )
    agent = load_contracts(agents, TOOLS).agent("expense-intake")
    assert agent.context.policy == Policy.SUMMARISE and agent.context.sections.history == 2000


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: _intake(d).update(context_view=["input/amount"]),
            r"workflow 'expense-approval': field 'steps.0.context_view.str': Input should be a valid string; "
            r"field 'steps.0.context_view.list\[.*\].0': Value error, 'input/amount' is not a JSON Pointer "
            r"\(RFC 6901\)",
        ),
        (
            lambda d: d["workflows"]["expense-approval"].update(views={"claim": ["/input/~2"]}),
            r"field 'views.claim.0': Value error, '/input/~2' is not a JSON Pointer",
        ),
        (
            lambda d: _intake(d).update(context_view="secret-view"),
            r"workflow 'expense-approval': .*step 'intake': field 'context_view': unknown view 'secret-view' "
            r"\(the workflow's views: \[\]\)",
        ),
    ],
)
def test_bad_views_are_rejected_clearly(tmp_path: Path, change: Change, expected: str) -> None:
    config = _config(tmp_path, "workflows.yaml", change)
    with pytest.raises(ContractError, match=expected):
        load_contracts(config, TOOLS)


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (
            {"sections": {"observations": -1}},
            r"agent 'expense-intake': field 'context.sections.observations': "
            r"Input should be greater than or equal to 0",
        ),
        (
            {"policy": "forget_everything"},
            r"agent 'expense-intake': field 'context.policy': Input should be 'keep_last_turns', "
            r"'drop_oldest_observations' or 'summarise'",
        ),
        ({"sections": {"histroy": 10}}, r"field 'context.sections.histroy': Extra inputs are not permitted"),
        ({"keep_last_turns": 0}, r"field 'context.keep_last_turns': Input should be greater than or equal to 1"),
    ],
)
def test_bad_budgets_are_rejected_clearly(tmp_path: Path, context: dict[str, Any], expected: str) -> None:
    config = _config(tmp_path, "agents.yaml", lambda d: d["agents"]["expense-intake"].update(context=context))
    with pytest.raises(ContractError, match=expected):
        load_contracts(config, TOOLS)


def test_an_unknown_tokenizer_is_rejected_clearly(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(
        yaml.safe_dump({"models": {"gpt": {"provider": "openai", "base_url": "http://x", "tokenizer": "o300k_base"}}})
    )
    with pytest.raises(ContractError, match=r"model 'gpt': .*field 'tokenizer': unknown encoding 'o300k_base'"):
        load_catalogue(tmp_path)
