"""Reviewers and roles: tokens kept only as digests, roles ranked, every role a workflow names declared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from handrail.contracts import load_contracts
from handrail.errors import ContractError
from handrail.tools import default_registry
from handrail_review.reviewers import load_directory, token_digest

CONFIG = Path(__file__).resolve().parents[3] / "config"
CONTRACTS = load_contracts(CONFIG, default_registry().names())
ANA_TOKEN = "ana-token-0123456789abcdef"
DAN_TOKEN = "dan-token-0123456789abcdef"


def reviewers_file(tmp_path: Path, change: object = None) -> Path:
    data = yaml.safe_load((CONFIG / "reviewers.yaml").read_text())
    data["reviewers"]["ana"]["token_sha256"] = token_digest(ANA_TOKEN)
    if change is not None:
        change(data)  # type: ignore[operator]
    path = tmp_path / "reviewers.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_tokens_from_the_file_and_the_environment_authenticate_and_are_kept_only_hashed(tmp_path: Path) -> None:
    directory = load_directory(reviewers_file(tmp_path), SecretStr(json.dumps({"dan": DAN_TOKEN})), CONTRACTS)
    ana, dan = directory.authenticate(ANA_TOKEN), directory.authenticate(DAN_TOKEN)
    assert ana is not None and (ana.id, ana.roles, ana.actor) == ("ana", ("manager",), "reviewer:ana")
    assert dan is not None and dan.roles == ("director",)
    assert directory.authenticate("nobody's token") is None
    assert directory.authenticate("") is None
    assert DAN_TOKEN not in repr(directory) and token_digest(DAN_TOKEN) in directory.digests


def test_a_higher_role_may_decide_what_a_lower_one_may_and_escalation_goes_one_rank_up(tmp_path: Path) -> None:
    directory = load_directory(reviewers_file(tmp_path), SecretStr(json.dumps({"dan": DAN_TOKEN})), CONTRACTS)
    ana, dan = directory.reviewers["ana"], directory.reviewers["dan"]
    assert directory.deciding_role(ana, "manager") == "manager"
    assert directory.deciding_role(ana, "director") is None
    assert directory.deciding_role(dan, "manager") == "director"
    assert directory.deciding_role(dan, "no-such-role") is None
    assert directory.next_role("reviewer") == "manager" and directory.next_role("manager") == "director"
    assert directory.next_role("director") is None


def _without_directors(data: dict[str, Any]) -> None:
    data["roles"].pop("director")
    for reviewer in data["reviewers"].values():
        reviewer["roles"] = [r for r in reviewer["roles"] if r != "director"] or ["manager"]


@pytest.mark.parametrize(
    ("change", "tokens", "expected"),
    [
        (_without_directors, None, r"workflow 'expense-approval' sends reviews to role 'director'"),
        (lambda d: d["reviewers"]["ana"].update(roles=["boss"]), None, r"reviewer 'ana': field 'roles': unknown role"),
        (lambda d: d["reviewers"]["ana"].update(token_sha256="abc"), None, r"field 'reviewers.ana.token_sha256'"),
        (None, {"eve": "e" * 20}, r"reviewers \['eve'\] are not declared"),
        (None, {"dan": "short"}, r"16\+ chars"),
    ],
)
def test_a_bad_reviewers_file_or_token_setting_stops_start_up(
    tmp_path: Path, change: object, tokens: dict[str, str] | None, expected: str
) -> None:
    secret = SecretStr(json.dumps(tokens)) if tokens is not None else None
    with pytest.raises(ContractError, match=expected):
        load_directory(reviewers_file(tmp_path, change), secret, CONTRACTS)
