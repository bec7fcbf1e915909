"""CLI settings (``HANDRAIL_*``); command-line options override them."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class CliSettings(BaseSettings):
    """Where the CLI finds the bus and the contracts."""

    model_config = SettingsConfigDict(env_prefix="HANDRAIL_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "handrail."
    config_dir: Path = Path("config")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "hr:"
