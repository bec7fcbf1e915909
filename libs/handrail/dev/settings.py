"""Settings of the local infrastructure launcher, read from ``HANDRAIL_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DevSettings(BaseSettings):
    """Where the dev Kafka and Redis live, and where their files go.

    The Kafka controller listens on the bootstrap port + 1 (9093 by default).
    """

    model_config = SettingsConfigDict(env_prefix="HANDRAIL_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    run_dir: Path = Field(default_factory=lambda: Path.cwd() / ".run")
    """Pid files, logs, configs and data of the servers ``up`` starts."""
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "handrail")
    """Kafka jars, resolved once per version into ``<cache_dir>/kafka-<version>/libs``."""
    #: Redis appends every write to its AOF (fsync once a second), so a restart keeps the fast state.
    #: Correctness never depends on it - Kafka is the record - so drills turn it off to lose everything.
    redis_persistence: bool = True
    kafka_version: str = "4.3.1"
    # 512 MB holds a single dev broker comfortably; Kafka's own default (1 GB) is for production.
    kafka_heap_mb: int = Field(default=512, ge=128)
