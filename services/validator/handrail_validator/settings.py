"""Validator settings (``HANDRAIL_*``)."""

from __future__ import annotations

from pydantic import Field

from handrail.service import ServiceSettings


class ValidatorSettings(ServiceSettings):
    """What the validator needs beyond the shared settings."""

    http_port: int = Field(default=8083, ge=0, le=65535)
