"""What ``up`` / ``down`` / ``status`` report for one server."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class ServiceState(StrEnum):
    """Who runs a server at the configured address."""

    RUNNING = "running"
    """Started by ``up`` (a live pid file under ``run_dir``)."""
    EXTERNAL = "external"
    """Answers at the address, but ``up`` did not start it; ``down`` leaves it alone."""
    STOPPED = "stopped"
    """Nothing answers at the address."""


@dataclass(frozen=True)
class ServiceStatus:
    """The state of one server (``kafka`` or ``redis``) after a launcher call."""

    name: str
    state: ServiceState
    address: str
    pid: int | None = None
    log_path: Path | None = None
    changed: bool = False
    """True when this call started or stopped the process."""
    detail: str = ""
