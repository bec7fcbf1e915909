"""The short chaos soak: 300 tasks under 8 faults of every kind, Redis state loss included, on a stack of its own."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.fixtures.stack import port_is_free

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bus, pytest.mark.timeout(1500)]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports nothing listens on (Kafka needs its controller port next)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count < 65535 and all(port_is_free(base + i) for i in range(count)):
            return base
    raise AssertionError("no free run of ports")


def test_a_short_soak_keeps_every_promise(tmp_path: Path, kafka_bootstrap: str) -> None:
    # kafka_bootstrap: the session's Kafka is up, so its jars are in the cache the soak's broker uses.
    run = subprocess.run(
        [sys.executable, "-m", "tools.chaos", "--tasks", "300", "--rate", "5", "--faults", "8",
         "--base-port", str(free_ports(3)), "--run-dir", str(tmp_path / "chaos"), "--drain-timeout-s", "400"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1400,
    )  # fmt: skip
    report = run.stdout + "\n" + run.stderr[-20000:]
    print(report)
    assert run.returncode == 0, report
    assert "every promise held" in run.stdout
    assert "kill-redis" in run.stdout and ", 7 kinds:" in run.stdout
