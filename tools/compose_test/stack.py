"""docker-compose.yml's core on one engine: started in the order its depends_on gives, torn down whole."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tools.compose_test import ComposeTestFailed
from tools.compose_test.engine import Engine

#: Left out: their images come only from registries (tests/deploy checks their configuration offline).
OBSERVABILITY = frozenset({"otel-collector", "jaeger", "kafka-exporter", "prometheus", "grafana"})
# Health checks run every few seconds; a cold Kafka in a container takes ~30 s on two cores.
_POLL_S = 2.0
_COMPOSE_TIMEOUT_S = 600.0


def published_ports(service: dict[str, Any]) -> list[int]:
    """Host ports of a service's ``ports`` ("9092:9092" or "127.0.0.1:9092:9092")."""
    return [int(str(spec).split(":")[-2]) for spec in service.get("ports", []) if ":" in str(spec)]


def external_bootstrap(kafka: dict[str, Any]) -> str:
    """The address Kafka advertises to clients outside the containers (its EXTERNAL listener)."""
    listeners = str(kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]).split(",")
    return next(entry.split("://", 1)[1] for entry in listeners if entry.startswith("EXTERNAL://"))


@dataclass
class Stack:
    """The core services of ``compose_file`` as project ``project``, with ``override`` merged over it."""

    engine: Engine
    project: str
    compose_file: Path
    override: dict[str, Any]
    run_dir: Path
    services: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        declared = yaml.safe_load(self.compose_file.read_text())["services"]
        self.services = {name: spec for name, spec in declared.items() if name not in OBSERVABILITY}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.override_file = self.run_dir / "compose.override.yml"
        self.override_file.write_text(yaml.safe_dump(self.override, sort_keys=False))
        self.log = self.run_dir / "compose.log"

    def dependencies(self, name: str) -> dict[str, str]:
        """The service's core dependencies and their conditions (those on left-out services are dropped)."""
        declared = self.services[name].get("depends_on") or {}
        return {dep: rule["condition"] for dep, rule in declared.items() if dep in self.services}

    def start_order(self) -> list[list[str]]:
        """The services in waves: each wave's dependencies are all in earlier ones."""
        placed: dict[str, int] = {}

        def wave(name: str, seen: tuple[str, ...] = ()) -> int:
            if name in seen:
                raise ComposeTestFailed(f"depends_on has a cycle: {' -> '.join((*seen, name))}")
            if name not in placed:
                placed[name] = 1 + max((wave(d, (*seen, name)) for d in self.dependencies(name)), default=-1)
            return placed[name]

        for name in self.services:
            wave(name)
        return [sorted(n for n, w in placed.items() if w == i) for i in range(max(placed.values()) + 1)]

    def ports_in_use(self) -> list[int]:
        """Published host ports something on this host already listens on."""
        taken = []
        for port in sorted({p for s in self.services.values() for p in published_ports(s)}):
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("0.0.0.0", port))  # noqa: S104 - the engine publishes on every interface
                except OSError:
                    taken.append(port)
        return taken

    def compose(self, *args: str) -> None:
        argv = [*self.engine.compose(), "-p", self.project, "-f", str(self.compose_file), "-f", str(self.override_file)]
        if self.engine.name == "podman":
            argv[len(self.engine.compose()) :] = ["--in-pod", "false", *argv[len(self.engine.compose()) :]]
        with self.log.open("a") as log:
            log.write(f"\n=== {' '.join(args)}\n")
            log.flush()
            try:
                out = subprocess.run(  # noqa: S603 - argv built here
                    [*argv, *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=_COMPOSE_TIMEOUT_S,
                    check=False,
                    cwd=self.compose_file.parent,
                )
            except subprocess.TimeoutExpired:
                raise ComposeTestFailed(f"compose {args[0]} did not finish in {_COMPOSE_TIMEOUT_S:g} s") from None
        if out.returncode != 0:
            tail = "\n".join(self.log.read_text().splitlines()[-15:])
            raise ComposeTestFailed(f"compose {' '.join(args)} failed (exit {out.returncode}); {self.log}:\n{tail}")

    def container(self, service: str) -> str:
        ids = self.engine.containers(self.project, service)
        if not ids:
            raise ComposeTestFailed(f"{service}: compose created no container (see {self.log})")
        return ids[0]

    def wait(self, service: str, condition: str, deadline: float) -> None:
        """Wait until ``service`` meets a depends_on ``condition``; fail with its logs if it cannot."""
        container = self.container(service)
        while True:
            status, code = self.engine.state(container)
            one_shot_done = status in ("exited", "stopped")
            if condition == "service_completed_successfully" and one_shot_done:
                if code == 0:
                    return
                self._fail(service, container, f"exited {code}")
            if condition != "service_completed_successfully" and one_shot_done:
                self._fail(service, container, f"exited {code} instead of running")
            if condition == "service_started" and status == "running":
                return
            if condition == "service_healthy" and status == "running" and self.engine.healthy(container):
                return
            if time.monotonic() > deadline:
                self._fail(service, container, f"not {condition.removeprefix('service_')} in time ({status})")
            time.sleep(_POLL_S)

    def _fail(self, service: str, container: str, what: str) -> None:
        raise ComposeTestFailed(f"{service} {what}; its last log lines:\n{self.engine.logs(container)}")

    def up(self, timeout_s: float, say: Any = print) -> None:
        """Start every core service wave by wave, then wait until the long-running ones are healthy."""
        deadline = time.monotonic() + timeout_s
        for wave in self.start_order():
            for service in wave:
                for dependency, condition in self.dependencies(service).items():
                    self.wait(dependency, condition, deadline)
            self.compose("up", "-d", "--no-deps", "--no-build", *wave)
            say(f"started {', '.join(wave)}")
        for name, spec in self.services.items():
            one_shot = spec.get("restart") == "no"
            self.wait(name, "service_completed_successfully" if one_shot else "service_healthy", deadline)

    def _labelled(self, kind: str) -> list[str]:
        """The project's volumes or networks, by the labels podman-compose and docker compose give them."""
        names: list[str] = []
        for label in ("io.podman.compose.project", "com.docker.compose.project"):
            out = self.engine.run(kind, "ls", "-q", "--filter", f"label={label}={self.project}")
            names += [n for n in out.stdout.split() if n not in names]
        return names

    def down(self) -> None:
        """Remove the project's containers, networks and volumes, even those compose no longer knows."""
        if not (self.engine.containers(self.project) or self._labelled("volume") or self._labelled("network")):
            return
        try:
            self.compose("down", "-v", "-t", "10")
        except ComposeTestFailed as exc:
            with self.log.open("a") as log:
                log.write(f"down failed, removing what is left by label: {exc}\n")
        if ids := self.engine.containers(self.project):
            self.engine.run("rm", "-f", "-v", *ids)
        for kind in ("volume", "network"):
            if names := self._labelled(kind):
                self.engine.run(kind, "rm", "-f", *names)
