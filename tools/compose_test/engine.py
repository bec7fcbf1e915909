"""The container engine the stack runs on: podman (with podman-compose) or docker (with docker compose)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tools.compose_test import ComposeTestFailed

# A pull from an unreachable registry fails within a second; a reachable one may take a while.
_PULL_TIMEOUT_S = 300.0
_COMMAND_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Engine:
    """One engine's commands; ``name`` is ``podman`` or ``docker``."""

    name: str

    @classmethod
    def detect(cls, project_dir: Path) -> Engine:
        out = subprocess.run(  # noqa: S603 - our own script
            [str(project_dir / "tools" / "container" / "engine.sh")], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            raise ComposeTestFailed(out.stderr.strip())
        return cls(Path(out.stdout.strip()).name)

    def compose(self) -> list[str]:
        """The compose command for this engine (podman-compose runs from this interpreter's environment)."""
        return [sys.executable, "-m", "podman_compose"] if self.name == "podman" else [self.name, "compose"]

    def run(self, *args: str, timeout_s: float = _COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(  # noqa: S603 - argv built here
                [self.name, *args], capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise ComposeTestFailed(f"`{self.name} {' '.join(args)}` did not finish within {timeout_s:g} s") from None

    def image_available(self, image: str) -> bool:
        """Whether ``image`` is here or can be pulled."""
        if self.run("image", "inspect", image).returncode == 0:
            return True
        return self.run("pull", "-q", image, timeout_s=_PULL_TIMEOUT_S).returncode == 0

    def containers(self, project: str, service: str | None = None) -> list[str]:
        """The ids of the project's containers (of one service), running or not."""
        filters = ["--filter", f"label=com.docker.compose.project={project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        out = self.run("ps", "-a", "-q", *filters)
        return out.stdout.split()

    def state(self, container: str) -> tuple[str, int]:
        """The container's status (``running``, ``exited`` ...) and exit code."""
        out = self.run("inspect", "--format", "{{json .State}}", container)
        if out.returncode != 0:
            return "missing", -1
        state = json.loads(out.stdout)
        return str(state.get("Status", "")).lower(), int(state.get("ExitCode", -1))

    def healthy(self, container: str) -> bool:
        """Whether the container's health check passes now.

        Podman runs health checks from systemd timers; without systemd nothing runs them,
        so the check is run here (which also records the status compose reads).
        """
        if self.name == "podman":
            return self.run("healthcheck", "run", container, timeout_s=60).returncode == 0
        out = self.run("inspect", "--format", "{{.State.Health.Status}}", container)
        return out.stdout.strip() == "healthy"

    def logs(self, container: str, lines: int = 30) -> str:
        out = self.run("logs", "--tail", str(lines), container)
        return (out.stdout + out.stderr).strip()
