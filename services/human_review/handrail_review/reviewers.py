"""Reviewers and roles, from ``config/reviewers.yaml``; tokens are kept only as sha256 digests.

A role with a higher ``rank`` may decide whatever a lower one may: a director
may approve what needs a manager, never the other way round.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from handrail.contracts import Contracts
from handrail.errors import ContractError
from handrail.messages import BudgetTopUp


class RoleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(ge=1, description="Higher ranks may decide what lower ranks may.")
    description: str = ""
    max_top_up: BudgetTopUp | None = Field(
        default=None,
        description="The most budget one approval in this role may grant (within the workflow's max_top_up); "
        "absent: up to the workflow's.",
    )


class ReviewerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    roles: list[str] = Field(min_length=1)
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 hex of the token.")


class ReviewersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: dict[str, RoleSpec] = Field(min_length=1)
    reviewers: dict[str, ReviewerSpec] = Field(default_factory=dict)


def token_digest(token: str) -> str:
    """The sha256 hex digest a token is kept as. Tokens are random and long, so a fast hash suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Reviewer:
    """An authenticated person: their id, name and roles."""

    id: str
    name: str
    roles: tuple[str, ...]

    @property
    def actor(self) -> str:
        return f"reviewer:{self.id}"


@dataclass(frozen=True)
class Directory:
    """Who may log in, and which role may decide what."""

    roles: Mapping[str, RoleSpec]
    reviewers: Mapping[str, Reviewer]
    digests: Mapping[str, str]  # token digest -> reviewer id

    def authenticate(self, token: str) -> Reviewer | None:
        """The reviewer whose token this is, or None."""
        digest = token_digest(token)
        for known, reviewer_id in self.digests.items():
            if hmac.compare_digest(known, digest):
                return self.reviewers[reviewer_id]
        return None

    def rank(self, role: str) -> int:
        spec = self.roles.get(role)
        return spec.rank if spec is not None else 1_000_000  # an unknown role: nobody may decide

    def deciding_role(self, reviewer: Reviewer, required: str) -> str | None:
        """The reviewer's highest role that may decide a review needing ``required``, or None."""
        able = [r for r in reviewer.roles if self.rank(r) >= self.rank(required)]
        return max(able, key=self.rank) if able else None

    def top_up_limit(self, role: str) -> BudgetTopUp | None:
        """The most one approval in ``role`` may grant; None: no bound but the workflow's."""
        spec = self.roles.get(role)
        return spec.max_top_up if spec is not None else None

    def next_role(self, role: str) -> str | None:
        """The lowest role ranked above ``role``: where an escalated review goes."""
        above = [name for name, spec in self.roles.items() if spec.rank > self.rank(role)]
        return min(above, key=self.rank) if above else None


def load_directory(path: Path, tokens: SecretStr | None, contracts: Contracts) -> Directory:
    """Read ``path``, add the tokens from the environment, and check every role the workflows name exists."""
    try:
        raw = yaml.safe_load(path.read_text())
        spec = ReviewersFile.model_validate(raw)
    except FileNotFoundError:
        raise ContractError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"field {'.'.join(map(str, e['loc']))!r}: {e['msg']}" for e in exc.errors())
        raise ContractError(f"{path}: {problems}") from None
    for reviewer_id, reviewer in spec.reviewers.items():
        for role in reviewer.roles:
            if role not in spec.roles:
                raise ContractError(f"{path}: reviewer {reviewer_id!r}: field 'roles': unknown role {role!r}")
    for workflow in contracts.workflows.values():
        for role in _roles_named(workflow.review.role, (r.role for r in workflow.escalations)):
            if role not in spec.roles:
                raise ContractError(
                    f"{path}: workflow {workflow.name!r} sends reviews to role {role!r}, "
                    f"which is not declared (roles: {sorted(spec.roles)})"
                )
    digests = {r.token_sha256: rid for rid, r in spec.reviewers.items() if r.token_sha256}
    digests.update(_env_tokens(path, tokens, spec))
    reviewers = {rid: Reviewer(rid, r.name, tuple(r.roles)) for rid, r in spec.reviewers.items()}
    return Directory(roles=spec.roles, reviewers=reviewers, digests=digests)


def _roles_named(first: str, rest: Iterable[str]) -> set[str]:
    return {first, *rest}


def _env_tokens(path: Path, tokens: SecretStr | None, spec: ReviewersFile) -> dict[str, str]:
    if tokens is None:
        return {}
    try:
        pairs = json.loads(tokens.get_secret_value())
    except json.JSONDecodeError:
        raise ContractError("HANDRAIL_REVIEWER_TOKENS: not a JSON object of reviewer id -> token") from None
    if not isinstance(pairs, dict) or not all(isinstance(v, str) and len(v) >= 16 for v in pairs.values()):
        raise ContractError("HANDRAIL_REVIEWER_TOKENS: expected a JSON object of reviewer id -> token (16+ chars)")
    unknown = sorted(set(pairs) - set(spec.reviewers))
    if unknown:
        raise ContractError(f"HANDRAIL_REVIEWER_TOKENS: reviewers {unknown} are not declared in {path}")
    return {token_digest(token): reviewer_id for reviewer_id, token in pairs.items()}
