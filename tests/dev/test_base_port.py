"""A whole local stack on a base port of its own, beside the one on the default ports: the CLI, for real."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest
from tests.fixtures.cli import handrail
from tests.fixtures.infra import unavailable
from tests.fixtures.stack import port_is_free

from handrail_dev import DevSettings, services
from handrail_dev.ports import STACK_SPAN

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_AGENTS = ["expense-approver", "expense-intake"]  # config/agents.yaml


def _free_base_port() -> int:
    """A base port whose stack's every port is free (from 29500 on, a span at a time)."""
    for base in range(29500, 40000, STACK_SPAN):
        settings = DevSettings.at_base_port(base)
        ports = [settings.ports.kafka, settings.ports.controller, settings.ports.redis]
        ports += [p.http_port for p in services.plan(_AGENTS, base_port=settings.ports.services)]
        if all(port_is_free(port) for port in ports):
            return base
    raise RuntimeError("no free base port")


def _handrail(*args: str, env: dict[str, str], timeout_s: float) -> str:
    run = handrail(*args, env=env, timeout_s=timeout_s)
    assert run.returncode == 0, f"handrail {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout


@pytest.mark.bus
@pytest.mark.timeout(420)
def test_dev_up_and_services_up_on_a_base_port_of_their_own(tmp_path: Path) -> None:
    if not (shutil.which("java") and shutil.which("mvn") and shutil.which("redis-server")):
        unavailable("the launcher needs java, mvn and redis-server on PATH")
    base = _free_base_port()
    # Addresses exported for another stack must not matter: the command line's base port decides.
    env = {
        "HANDRAIL_RUN_DIR": str(tmp_path),
        "HANDRAIL_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "HANDRAIL_REDIS_URL": "redis://127.0.0.1:6379/0",
        "HANDRAIL_KAFKA_HEAP_MB": "256",
        "COLUMNS": "250",  # rich tables: one line per row, addresses unbroken
    }
    settings = DevSettings.at_base_port(base, run_dir=tmp_path)
    planned = services.plan(_AGENTS, base_port=settings.ports.services)
    try:
        infra = _handrail("dev", "up", "--base-port", str(base), env=env, timeout_s=240)
        assert f"127.0.0.1:{base}" in infra and f"127.0.0.1:{base + 2}" in infra
        up = _handrail("dev", "services", "up", "--base-port", str(base), env=env, timeout_s=240)
        assert f"on Kafka 127.0.0.1:{base} and Redis 127.0.0.1:{base + 2}" in up
        # Every service listens where the plan put it (its HANDRAIL_HTTP_PORT), not on the default ports.
        for process in planned:
            url = f"http://127.0.0.1:{process.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200, process.name
        stopped = [name for name, pid in services.running(planned, tmp_path).items() if pid is None]
        logs = {p.name: p.paths(tmp_path)[1].read_text(errors="replace")[-1500:] for p in planned}
        assert not stopped, "not running: " + "; ".join(f"{name}: {logs[name]}" for name in stopped)
        status = _handrail("dev", "services", "status", "--base-port", str(base), env=env, timeout_s=60)
        assert f"http://127.0.0.1:{base + 10}/healthz" in status
    finally:
        _handrail("dev", "services", "down", "--base-port", str(base), env=env, timeout_s=120)
        _handrail("dev", "down", "--base-port", str(base), env=env, timeout_s=120)
    assert all(pid is None for pid in services.running(planned, tmp_path).values())
    assert all(port_is_free(port) for port in (base, base + 1, base + 2))
