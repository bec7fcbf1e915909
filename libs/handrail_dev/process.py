"""Background server processes: spawn detached, pid files, liveness checks, stop."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from handrail_dev.errors import ServiceStopError, ToolNotFoundError

# Popen objects of the servers this Python process started: keeping them alive avoids
# the "subprocess is still running" ResourceWarning and lets poll() reap exited children.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

_POLL_INTERVAL_S = 0.2


def require_tool(name: str, install_hint: str) -> str:
    """Return the absolute path of ``name`` on PATH, or raise saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise ToolNotFoundError(f"{name} not found: {install_hint}")
    return path


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Serialize launcher calls sharing a run dir (e.g. parallel test workers)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def spawn(
    argv: Sequence[str], *, log_path: Path, pid_path: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start ``argv`` in its own session (it outlives the caller), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} handrail dev: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(  # noqa: S603 - argv is built by the launcher, never from user input
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    pid_path.write_text(f"{proc.pid}\n")
    return proc.pid


def exit_code(pid: int) -> int | None:
    """The exit code of a child this process spawned, once it has exited."""
    proc = _CHILDREN.get(pid)
    return None if proc is None else proc.poll()


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        # The state is the field after the parenthesised command name.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _cmdline_has(pid: int, marker: str) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True  # no procfs (macOS): trust the pid file
    try:
        return marker.encode() in cmdline.read_bytes()
    except OSError:
        return False


def live_pid(pid_path: Path, marker: str) -> int | None:
    """The pid in ``pid_path`` if that process is alive and its command line contains ``marker``.

    A stale pid file (dead process, or a reused pid) is removed. A child this process spawned is
    known by its pid alone: right after the fork its command line is still this process's own.
    """
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None
    if is_alive(pid) and (pid in _CHILDREN or _cmdline_has(pid, marker)):
        return pid
    pid_path.unlink(missing_ok=True)
    return None


def stop(pid: int, *, name: str, term_timeout_s: float, log_path: Path) -> None:
    """SIGTERM ``pid``, wait up to ``term_timeout_s``, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, term_timeout_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not is_alive(pid):
                _CHILDREN.pop(pid, None)
                return
            time.sleep(_POLL_INTERVAL_S)
    raise ServiceStopError(f"{name} (pid {pid}) is still alive after SIGTERM and SIGKILL; see {log_path}")


def tcp_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def is_local(host: str) -> bool:
    """True for loopback names: ``up`` only starts servers on this machine."""
    return host in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}  # noqa: S104 - a name, not a bind


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log file)"
    return "\n".join(text.rstrip().splitlines()[-lines:])
