"""Run Handrail's services as local processes: router, one worker per agent, validator, breaker, review.

Used by ``make up`` / ``make demo`` (``handrail dev services up|down|status``) and by
the tests that run the services as separate processes. Each process gets a pid file
and a log file under ``<run_dir>/services/``; settings reach it as ``HANDRAIL_*``. Every
process signs with its own key from ``<run_dir>/keys`` (``handrail_dev.signing_keys``) and
logs in to Redis as its own ACL user (``handrail_dev.redis_users``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from handrail.signing import OPERATOR
from handrail_dev.errors import ServiceStartError
from handrail_dev.ports import StackPorts
from handrail_dev.process import is_alive, live_pid, log_tail, spawn, stop
from handrail_dev.redis_users import ensure_users
from handrail_dev.settings import DevSettings
from handrail_dev.signing_keys import ensure_keys, signing_env

#: How long a service may take to answer /healthz: imports plus joining Kafka.
_READY_TIMEOUT_S = 60.0
_POLL_INTERVAL_S = 0.2


#: The service each module runs (its signer name): the names ``plan`` gives them.
_SERVICE_OF_MODULE = {
    "handrail_router": "router",
    "handrail_validator": "validator",
    "handrail_circuit_breaker": "circuit-breaker",
    "handrail_review": "human-review",
}


@dataclass(frozen=True)
class ServiceProcess:
    """One service to run: its name, its module and arguments, and its HTTP port."""

    name: str
    argv: tuple[str, ...]
    http_port: int
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def agent(self) -> str | None:
        """The agent a worker runs (``--agent``); None for the platform services."""
        return self.argv[self.argv.index("--agent") + 1] if "--agent" in self.argv[:-1] else None

    @property
    def signer(self) -> str:
        """Who it signs as (and its Redis user), as the runtime decides it: a worker's agent, a
        service's name (from its module), else the process's name. A replica signs as the original."""
        if self.agent is not None:
            return self.agent
        module = self.argv[self.argv.index("-m") + 1] if "-m" in self.argv[:-1] else None
        return _SERVICE_OF_MODULE.get(module or "", self.name)

    def paths(self, run_dir: Path) -> tuple[Path, Path]:
        """Its pid file and log file."""
        base = run_dir / "services"
        return base / f"{self.name}.pid", base / f"{self.name}.log"


def plan(
    agents: list[str], base_port: int = StackPorts.at(None).services, shadows: Sequence[str] = ()
) -> list[ServiceProcess]:
    """The processes of a full local stack: router, validator, circuit-breaker, human-review, one worker per agent,
    and the shadow worker of each agent in ``shadows`` (those with a ``shadow`` in agents.yaml), from port + 45.

    Ports from ``base_port`` (a stack's ``DevSettings.ports.services``): router +0, validator +2,
    circuit-breaker +4, human-review +5, workers +10 onwards. Each process is given its port as
    ``HANDRAIL_HTTP_PORT``, so two plans from base ports :data:`~handrail_dev.ports.STACK_SPAN` apart
    run side by side.
    """
    python = sys.executable
    processes = [
        ServiceProcess("router", (python, "-m", "handrail_router"), base_port),
        ServiceProcess("validator", (python, "-m", "handrail_validator"), base_port + 2),
        ServiceProcess("circuit-breaker", (python, "-m", "handrail_circuit_breaker"), base_port + 4),
        ServiceProcess("human-review", (python, "-m", "handrail_review"), base_port + 5),
    ]
    for i, agent in enumerate(sorted(agents)):
        processes.append(
            ServiceProcess(f"worker-{agent}", (python, "-m", "handrail_worker", "--agent", agent), base_port + 10 + i)
        )
    for i, agent in enumerate(sorted(shadows)):
        argv = (python, "-m", "handrail_worker", "--agent", agent, "--shadow")
        processes.append(ServiceProcess(f"shadow-{agent}", argv, base_port + 45 + i))
    return processes


def stack_env(settings: DevSettings) -> dict[str, str]:
    """What the services of ``settings``' stack are told about it: its Kafka and its Redis."""
    return {"HANDRAIL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "HANDRAIL_REDIS_URL": settings.redis_url}


def with_reviewer_tokens(process: ServiceProcess, tokens: Mapping[str, str]) -> ServiceProcess:
    """``process`` with the reviewers' tokens in its environment, if it is the human-review service."""
    if process.name != "human-review":
        return process
    return replace(process, env={**process.env, "HANDRAIL_REVIEWER_TOKENS": json.dumps(dict(tokens))})


def start(process: ServiceProcess, run_dir: Path, env: Mapping[str, str], cwd: Path) -> int:
    """Start ``process`` detached (unless its pid file names a live one) and return its pid."""
    pid_path, log_path = process.paths(run_dir)
    if (pid := live_pid(pid_path, process.argv[-1])) is not None:
        return pid
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env, **process.env}
    full_env |= signing_env(process.signer, run_dir, full_env) | {"HANDRAIL_HTTP_PORT": str(process.http_port)}
    agents = [process.agent] if process.agent is not None else []
    if url := ensure_users(run_dir, full_env, [process.signer], agents).get(process.signer):
        full_env["HANDRAIL_REDIS_URL"] = url  # its own Redis user, limited to what it may touch
    return spawn(process.argv, log_path=log_path, pid_path=pid_path, cwd=cwd, env=full_env)


def wait_ready(process: ServiceProcess, run_dir: Path, timeout_s: float = _READY_TIMEOUT_S) -> None:
    """Wait until the service answers ``/healthz`` with 200, or raise naming its log."""
    pid_path, log_path = process.paths(run_dir)
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{process.http_port}/healthz"
    # Not live_pid(): right after the fork the child's command line is still its parent's.
    pid = int(pid_path.read_text().strip())
    while time.monotonic() < deadline:
        if not is_alive(pid):
            raise ServiceStartError(f"{process.name} exited during start-up; {log_path}:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(_POLL_INTERVAL_S)
    raise ServiceStartError(f"{process.name} not healthy after {timeout_s:g}s; {log_path}:\n{log_tail(log_path)}")


def stop_process(process: ServiceProcess, run_dir: Path) -> bool:
    """SIGTERM the process (SIGKILL after a grace period); return whether one was running."""
    pid_path, log_path = process.paths(run_dir)
    pid = live_pid(pid_path, process.argv[-1])
    if pid is None:
        return False
    stop(pid, name=process.name, term_timeout_s=15.0, log_path=log_path)
    pid_path.unlink(missing_ok=True)
    return True


def up(processes: list[ServiceProcess], run_dir: Path, env: Mapping[str, str], cwd: Path) -> None:
    """Start every process, then wait until each is healthy."""
    # All of them before anyone loads its trust store; and the operators' key, for the CLI's records.
    ensure_keys(run_dir, [*(p.signer for p in processes), OPERATOR])
    for process in processes:
        start(process, run_dir, env, cwd)
    for process in processes:
        wait_ready(process, run_dir)


def down(processes: list[ServiceProcess], run_dir: Path) -> list[str]:
    """Stop every process; return the names of those that were running."""
    return [p.name for p in processes if stop_process(p, run_dir)]


def running(processes: list[ServiceProcess], run_dir: Path) -> dict[str, int | None]:
    """Each process's pid, or None when it is not running."""
    return {p.name: live_pid(p.paths(run_dir)[0], p.argv[-1]) for p in processes}
