"""Human-review settings (``HANDRAIL_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from handrail.errors import ContractError
from handrail.service import ServiceSettings


class ReviewSettings(ServiceSettings):
    """Where the reviewers are declared, their tokens, and how often deadlines are checked."""

    http_port: int = Field(default=8086, ge=0, le=65535)
    reviewers_file: Path | None = Field(default=None, description="Default: `<config_dir>/reviewers.yaml`.")
    #: JSON object reviewer id -> token, e.g. from a Kubernetes secret; hashed at start-up, never kept.
    reviewer_tokens: SecretStr | None = None
    #: The same JSON object in a file (a docker-compose or Kubernetes secret mounted as a file).
    reviewer_tokens_file: Path | None = None
    #: How often reviews past their deadline, and decisions whose effects did not finish, are handled.
    review_sweep_interval_s: float = Field(default=1.0, gt=0)
    #: How often the graduation rule (config/autonomy.yaml) is judged for every agent and workflow. Reviews
    #: take people minutes to hours, so a few seconds late costs nothing; each round reads one key per pair.
    autonomy_interval_s: float = Field(default=10.0, gt=0)
    #: The largest HTTP request body taken (413 beyond, before anything is read or recorded).
    review_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    #: The largest edited context or arguments taken (413 beyond): they travel on in a Kafka record.
    review_max_edit_bytes: int = Field(default=256 * 1024, gt=0)
    #: The task console's link to a task's trace in the tracing UI, naming ``{trace_id}`` (the W3C trace id
    #: the task's records carried) or ``{task_id}``, e.g. ``http://jaeger:16686/trace/{trace_id}``. Unset: no link.
    trace_url_template: str | None = Field(default=None, min_length=1)

    def reviewers_path(self) -> Path:
        return self.reviewers_file or self.config_dir / "reviewers.yaml"

    def tokens(self) -> SecretStr | None:
        """The reviewers' tokens: HANDRAIL_REVIEWER_TOKENS, or the file HANDRAIL_REVIEWER_TOKENS_FILE names."""
        if self.reviewer_tokens_file is None:
            return self.reviewer_tokens
        if self.reviewer_tokens is not None:
            raise ContractError("set HANDRAIL_REVIEWER_TOKENS or HANDRAIL_REVIEWER_TOKENS_FILE, not both")
        try:
            return SecretStr(self.reviewer_tokens_file.read_text())
        except OSError as exc:
            raise ContractError(
                f"HANDRAIL_REVIEWER_TOKENS_FILE: cannot read {self.reviewer_tokens_file}: {exc}"
            ) from None
