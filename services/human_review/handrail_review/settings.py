"""Human-review settings (``HANDRAIL_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from handrail.service import ServiceSettings


class ReviewSettings(ServiceSettings):
    """Where the reviewers are declared, their tokens, and how often deadlines are checked."""

    http_port: int = Field(default=8086, ge=0, le=65535)
    reviewers_file: Path | None = Field(default=None, description="Default: `<config_dir>/reviewers.yaml`.")
    #: JSON object reviewer id -> token, e.g. from a Kubernetes secret; hashed at start-up, never kept.
    reviewer_tokens: SecretStr | None = None
    #: How often reviews past their deadline, and decisions whose effects did not finish, are handled.
    review_sweep_interval_s: float = Field(default=1.0, gt=0)

    def reviewers_path(self) -> Path:
        return self.reviewers_file or self.config_dir / "reviewers.yaml"
