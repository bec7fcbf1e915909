"""Settings of the local infrastructure launcher, read from ``HANDRAIL_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from handrail_dev.ports import STACK_SPAN, StackPorts


def _kafka_bootstrap(data: dict[str, Any]) -> str:
    return f"127.0.0.1:{StackPorts.at(data.get('base_port')).kafka}"


def _redis_url(data: dict[str, Any]) -> str:
    return f"redis://127.0.0.1:{StackPorts.at(data.get('base_port')).redis}/0"


def _run_dir(data: dict[str, Any]) -> Path:
    base_port = data.get("base_port")
    return Path.cwd() / ".run" / ("" if base_port is None else f"port-{base_port}")


class DevSettings(BaseSettings):
    """Where the dev Kafka and Redis live, and where their files go.

    The Kafka controller listens on the bootstrap port + 1 (9093 by default).
    """

    model_config = SettingsConfigDict(env_prefix="HANDRAIL_", frozen=True, extra="ignore")

    # Declared first: the addresses' and the run dir's defaults are computed from it.
    base_port: int | None = Field(default=None, ge=1, le=65535 - STACK_SPAN)
    """A stack of its own (``handrail dev up --base-port``): Kafka, Redis and the services on ports
    from here (``handrail_dev.ports``), files under ``.run/port-<base_port>``. An address or run dir
    set explicitly wins over what ``HANDRAIL_BASE_PORT`` implies (an address not over :meth:`at_base_port`).
    None: Kafka 9092, Redis 6379, services 8081."""
    kafka_bootstrap: str = Field(default_factory=_kafka_bootstrap)
    redis_url: str = Field(default_factory=_redis_url)
    run_dir: Path = Field(default_factory=_run_dir)
    """Pid files, logs, configs and data of the servers ``up`` starts."""
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "handrail")
    """Kafka jars, resolved once per version into ``<cache_dir>/kafka-<version>/libs``."""
    #: Redis appends every write to its AOF (fsync once a second), so a restart keeps the fast state.
    #: Correctness never depends on it - Kafka is the record - so drills turn it off to lose everything.
    redis_persistence: bool = True
    kafka_version: str = "4.3.1"
    # 512 MB holds a single dev broker comfortably; Kafka's own default (1 GB) is for production.
    kafka_heap_mb: int = Field(default=512, ge=128)

    @classmethod
    def at_base_port(cls, base_port: int, **settings: Any) -> DevSettings:
        """The stack on ``base_port`` (a command line's ``--base-port``): its addresses as the base port says,
        whatever ``HANDRAIL_KAFKA_BOOTSTRAP`` / ``HANDRAIL_REDIS_URL`` say (a stack that one variable could
        point at another's Kafka is one a drill could break); ``settings`` override any field."""
        data: dict[str, Any] = {"base_port": base_port}
        derived = {"kafka_bootstrap": _kafka_bootstrap(data), "redis_url": _redis_url(data)}
        return cls(**{**derived, **data, **settings})

    @property
    def ports(self) -> StackPorts:
        """The ports of this stack; the services' from the base port (or 8081), whatever the addresses say."""
        return StackPorts.at(self.base_port)
