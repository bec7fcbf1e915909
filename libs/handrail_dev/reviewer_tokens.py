"""Reviewer tokens for a local stack: one per reviewer of ``reviewers.yaml``, kept in the run dir.

``make up`` and ``make demo`` give the human-review service these tokens (as
``HANDRAIL_REVIEWER_TOKENS``) and print how to log in. The file is created once
(mode 0600) and reused, so a token keeps working across restarts; delete it to
get new ones. In docker-compose and Kubernetes the same JSON object comes from a
secret (see the README and ``k8s/README.md``).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import yaml

from handrail.errors import ContractError

FILE_NAME = "reviewer-tokens.json"


def reviewer_ids(reviewers_file: Path) -> list[str]:
    """The ids of the reviewers ``reviewers_file`` declares."""
    try:
        declared = yaml.safe_load(reviewers_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"cannot read the reviewers in {reviewers_file}: {exc}") from None
    reviewers = declared.get("reviewers") if isinstance(declared, dict) else None
    if not isinstance(reviewers, dict):
        raise ContractError(f"{reviewers_file}: expected a `reviewers:` mapping of reviewer id -> reviewer")
    return sorted(str(r) for r in reviewers)


def dev_tokens(run_dir: Path, reviewers_file: Path) -> tuple[dict[str, str], Path]:
    """The local stack's token of every reviewer (new ones for reviewers the file lacks) and the file's path."""
    path = run_dir / FILE_NAME
    tokens: dict[str, str] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ContractError(f"{path} is not a JSON object of reviewer id -> token ({exc}); delete it") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise ContractError(f"{path} is not a JSON object of reviewer id -> token; delete it")
        tokens = {str(k): v for k, v in loaded.items()}
    wanted = reviewer_ids(reviewers_file)
    if set(wanted) - set(tokens):
        tokens = {r: tokens.get(r) or secrets.token_urlsafe(24) for r in wanted}
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(tokens, out, indent=2, sort_keys=True)
    return {r: tokens[r] for r in wanted}, path


def login_hint(url: str, tokens: dict[str, str], path: Path) -> str:
    """How to log in to the review page and the CLI, for a person reading the terminal."""
    first = next(iter(tokens))
    return (
        f"review page: {url}  - log in with a reviewer's token; every reviewer's is in {path}\n"
        f"  e.g. {first}: {tokens[first]}\n"
        f"  CLI: HANDRAIL_REVIEW_TOKEN={tokens[first]} handrail review list"
    )
