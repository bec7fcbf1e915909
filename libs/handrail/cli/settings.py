"""CLI settings (``HANDRAIL_*``); command-line options override them."""

from __future__ import annotations

from pathlib import Path

from handrail.service.settings import KafkaSettings


class CliSettings(KafkaSettings):
    """Where the CLI finds the bus (and who it is there), the state and the contracts."""

    topic_prefix: str = "handrail."
    config_dir: Path = Path("config")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "hr:"
