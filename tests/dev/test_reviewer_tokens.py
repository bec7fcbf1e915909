"""The local stack's reviewer tokens: made once per reviewer, private, reused, and read by the review service."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from handrail.errors import ContractError
from handrail_dev.reviewer_tokens import dev_tokens, login_hint
from handrail_review.settings import ReviewSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REVIEWERS = PROJECT_ROOT / "config" / "reviewers.yaml"


def test_every_reviewer_gets_a_private_token_that_is_kept(tmp_path: Path) -> None:
    tokens, path = dev_tokens(tmp_path, REVIEWERS)
    assert sorted(tokens) == ["ana", "dan", "dora", "max", "ops"]
    assert len(set(tokens.values())) == 5 and all(len(t) >= 24 for t in tokens.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "only its owner may read it"
    again, _ = dev_tokens(tmp_path, REVIEWERS)
    assert again == tokens, "a token keeps working across restarts"
    hint = login_hint("http://127.0.0.1:8086", tokens, path)
    assert str(path) in hint and tokens["ana"] in hint and "HANDRAIL_REVIEW_TOKEN=" in hint


def test_a_reviewer_added_later_gets_one_and_the_others_keep_theirs(tmp_path: Path) -> None:
    (tmp_path / "reviewer-tokens.json").write_text(json.dumps({"ana": "kept-token-of-ana-0123456789"}))
    tokens, _ = dev_tokens(tmp_path, REVIEWERS)
    assert tokens["ana"] == "kept-token-of-ana-0123456789" and len(tokens) == 5


def test_a_broken_tokens_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "reviewer-tokens.json").write_text("{not json")
    with pytest.raises(ContractError, match=r"reviewer-tokens\.json is not a JSON object .*delete it"):
        dev_tokens(tmp_path, REVIEWERS)


def test_the_review_service_reads_the_tokens_from_a_mounted_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "reviewer_tokens"
    secret.write_text(json.dumps({"ana": "a-token-from-a-secret-file"}))
    settings = ReviewSettings(reviewer_tokens_file=secret)
    found = settings.tokens()
    assert found is not None and json.loads(found.get_secret_value()) == {"ana": "a-token-from-a-secret-file"}
    with pytest.raises(ContractError, match="cannot read"):
        ReviewSettings(reviewer_tokens_file=tmp_path / "missing").tokens()
    with pytest.raises(ContractError, match="not both"):
        ReviewSettings(reviewer_tokens_file=secret, reviewer_tokens="{}").tokens()  # type: ignore[arg-type]
