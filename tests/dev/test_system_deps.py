"""What ``make`` installs: the demo and the stack only what they need, the tests their browser too, apt quietly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT_ROOT / "tools" / "apt-install.sh"
#: Installed only for the tests (the review page's browser test); ~120 packages.
TEST_ONLY = "chromium"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _recipes(target: str) -> str:
    """What ``make <target>`` would run (``make -n``: nothing runs)."""
    out = subprocess.run(
        ["make", "-n", target],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return out.stdout


@pytest.mark.parametrize("target", ["demo", "up", "infra", "chaos"])
def test_the_stack_and_the_demo_install_no_test_only_package(target: str) -> None:
    recipes = _recipes(target)
    assert "apt-install.sh .run/apt.log redis-server:redis-server" in recipes
    assert TEST_ONLY not in recipes


def test_the_tests_install_their_browser() -> None:
    recipes = _recipes("test")
    assert "redis-server:redis-server" in recipes
    assert f"{TEST_ONLY}:{TEST_ONLY}" in recipes


def test_make_calls_apt_only_through_the_quiet_script() -> None:
    lines = (PROJECT_ROOT / "Makefile").read_text().splitlines()
    # The JDK and Maven hints name apt-get; nothing else in the Makefile may run it.
    assert all("echo" in line for line in lines if "apt-get" in line)
    script = SCRIPT.read_text()
    assert "-qq" in script and '>"$run" 2>&1' in script


def _run_script(tmp_path: Path, *pairs: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), str(tmp_path / "apt.log"), *pairs],
        capture_output=True, text=True, timeout=30, env={**os.environ, **env},
    )  # fmt: skip


def test_the_script_installs_only_what_is_missing(tmp_path: Path) -> None:
    run = _run_script(tmp_path, "sh:dash", "handrail-no-such-command:some-package", env={"APT_INSTALL_DRY_RUN": "1"})
    assert (run.returncode, run.stdout.strip()) == (0, "would install: some-package")
    nothing = _run_script(tmp_path, "sh:dash", env={"APT_INSTALL_DRY_RUN": "1"})
    assert (nothing.returncode, nothing.stdout) == (0, "")


@pytest.mark.skipif(os.geteuid() != 0, reason="root: the script installs as root, and as anyone else says how")
def test_the_script_keeps_apt_off_the_terminal_and_says_one_line(tmp_path: Path) -> None:
    # A fake apt-get that talks as much as the real one: its output must land in the log only.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text(
        "#!/bin/sh\n"
        'for i in $(seq 1 200); do echo "Get:$i noise"; done\n'
        'case "$*" in *install*) for p in a b c; do echo "Setting up $p (1.0) ..."; done;; esac\n'
    )
    fake.chmod(0o755)
    run = _run_script(tmp_path, "handrail-no-such-command:pkg", env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1 and run.stdout.startswith("installed pkg (3 packages, ")
    assert str(tmp_path / "apt.log") in run.stdout
    assert (tmp_path / "apt.log").read_text().count("noise") == 400
