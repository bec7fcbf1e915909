"""The short chaos soak: 300 tasks under 8 faults of every kind, Redis state loss included, on a stack of its own."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from tests.fixtures.stack import port_is_free

from handrail_dev.ports import STACK_SPAN

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bus, pytest.mark.timeout(1500)]


def free_ports() -> int:
    """A base port whose whole stack span nothing listens on, below the kernel's ephemeral range: a port
    from that range may be taken by any client's outgoing connection between this check and the bind."""
    low = _ephemeral_low()
    for base in random.sample(range(20_000, low - STACK_SPAN, STACK_SPAN), 50):
        if all(port_is_free(base + i) for i in range(STACK_SPAN)):
            return base
    raise AssertionError(f"no free run of {STACK_SPAN} ports below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def test_a_short_soak_keeps_every_promise(tmp_path: Path, kafka_bootstrap: str) -> None:
    # kafka_bootstrap: the session's Kafka is up, so its jars are in the cache the soak's broker uses.
    run = subprocess.run(
        [sys.executable, "-m", "tools.chaos", "--tasks", "300", "--rate", "5", "--faults", "8",
         "--base-port", str(free_ports()), "--run-dir", str(tmp_path / "chaos"), "--drain-timeout-s", "400"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1400,
    )  # fmt: skip
    report = run.stdout + "\n" + run.stderr[-20000:]
    print(report)
    assert run.returncode == 0, report
    assert "every promise held" in run.stdout
    assert "kill-redis" in run.stdout and ", 7 kinds:" in run.stdout
