"""A single-node KRaft Kafka with SASL/SCRAM-SHA-512 and the StandardAuthorizer, for least-privilege tests.

Same jars and process handling as :mod:`handrail_dev.kafka`, under ``<run_dir>/kafka-sasl/``:

- listener ``CLIENT`` (the bootstrap port): SASL_PLAINTEXT with SCRAM-SHA-512, for every
  client and for the broker's own inter-broker traffic (transaction markers need it);
- listener ``CONTROLLER`` (port + 1): SASL_PLAINTEXT with PLAIN and one static user only
  the broker knows (SCRAM credentials live in the metadata the controller serves, so the
  controller cannot use SCRAM itself; and an open controller port would let anybody
  create ACLs);
- ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: whatever no ACL
  allows is denied; ``kafka-admin`` (inter-broker, ACL management) and ``kafka-controller``
  are the only super users.

SCRAM users are created when the storage is formatted (``--add-scram``); their random
passwords are kept in ``credentials.json`` (mode 0600) next to the broker's files.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from handrail.bus.security import SaslCredentials
from handrail_dev.errors import PortConflictError, ServiceStartError
from handrail_dev.kafka import (
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    KafkaFiles,
    _broker_argv,
    _cluster_id,
    _java_base,
    _run_sync,
    kafka_answers_async,
    parse_bootstrap,
    server_properties,
)
from handrail_dev.kafka_jars import kafka_libs, require_java, tools_file
from handrail_dev.process import exit_code, is_alive, live_pid, log_tail, spawn, stop, tcp_open
from handrail_dev.settings import DevSettings

#: The broker's own identity: inter-broker traffic and ACL management. A super user.
BROKER_ADMIN = "kafka-admin"
#: The static PLAIN user of the controller listener. A super user; only the broker uses it.
CONTROLLER_USER = "kafka-controller"
_MECHANISM = "SCRAM-SHA-512"
_PROBE_TIMEOUT_S = 3.0
_POLL_INTERVAL_S = 0.5
_PROCESS_MARKER = "kafka.Kafka"


@dataclass(frozen=True)
class SaslKafka:
    """A running SASL broker: where it is, and every user's credentials."""

    bootstrap: str
    pid: int
    files: KafkaFiles
    passwords: dict[str, str]

    def credentials(self, user: str) -> SaslCredentials:
        """SCRAM credentials of ``user`` (``kafka-admin`` or one created at start)."""
        return SaslCredentials(user, self.passwords[user], _MECHANISM)

    @property
    def admin(self) -> SaslCredentials:
        return self.credentials(BROKER_ADMIN)


def sasl_files(settings: DevSettings) -> KafkaFiles:
    """The SASL broker's files under ``<run_dir>/kafka-sasl``."""
    return KafkaFiles.under(settings.run_dir.resolve() / "kafka-sasl")


def _load_passwords(path: Path, users: Iterable[str]) -> dict[str, str]:
    """Stored passwords, plus fresh random ones for new users (written back, mode 0600)."""
    stored: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    wanted = {BROKER_ADMIN, CONTROLLER_USER, *users}
    # token_hex: SCRAM's --add-scram parser splits on ',' and '='; hex has neither.
    passwords = {u: stored.get(u) or secrets.token_hex(16) for u in sorted(wanted)}
    if passwords != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(passwords, out, indent=2)
    return passwords


def sasl_server_properties(settings: DevSettings, files: KafkaFiles, passwords: dict[str, str]) -> str:
    """The plain launcher's single-node properties, with SASL listeners and the StandardAuthorizer."""
    host, port = parse_bootstrap(settings.kafka_bootstrap)
    controller = f"{host}:{port + 1}"
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule required"
    overrides = {
        "listeners": f"CLIENT://{host}:{port},CONTROLLER://{controller}",
        "advertised.listeners": f"CLIENT://{host}:{port},CONTROLLER://{controller}",
        "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "CLIENT",
        "sasl.enabled.mechanisms": _MECHANISM,
        "sasl.mechanism.inter.broker.protocol": _MECHANISM,
        "listener.name.client.scram-sha-512.sasl.jaas.config": (
            f'{scram} username="{BROKER_ADMIN}" password="{passwords[BROKER_ADMIN]}";'
        ),
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": (
            f'{plain} username="{CONTROLLER_USER}" password="{passwords[CONTROLLER_USER]}" '
            f'user_{CONTROLLER_USER}="{passwords[CONTROLLER_USER]}";'
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{BROKER_ADMIN};User:{CONTROLLER_USER}",
        "allow.everyone.if.no.acl.found": "false",
    }
    lines = []
    for line in server_properties(settings, files).splitlines():
        key = line.split("=", 1)[0]
        if not line.startswith("#") and "=" in line and key in overrides:
            continue  # replaced below
        lines.append(line)
    lines.append("\n# SASL/SCRAM on CLIENT, PLAIN on CONTROLLER, ACLs enforced (handrail_dev.sasl).")
    lines += [f"{key}={value}" for key, value in overrides.items()]
    return "\n".join(lines) + "\n"


def _format_storage(java: str, libs: Path, files: KafkaFiles, passwords: dict[str, str]) -> None:
    if (files.data / "meta.properties").is_file():
        return
    argv = [
        *_java_base(java, libs, 256, tools_file("tools-log4j2.yaml")),
        "kafka.tools.StorageTool", "format", "--standalone", "-t", _cluster_id(), "-c", str(files.config),
    ]  # fmt: skip
    for user, password in passwords.items():
        if user != CONTROLLER_USER:
            argv += ["--add-scram", f"{_MECHANISM}=[name={user},password={password}]"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
    with files.log.open("a") as log:
        log.write(f"=== storage format with {len(passwords) - 1} SCRAM users (exit {out.returncode})\n")
    if out.returncode != 0:
        raise ServiceStartError(f"formatting SASL Kafka storage failed (exit {out.returncode}):\n{out.stderr.strip()}")


def _wait_ready(bootstrap: str, admin: SaslCredentials, pid: int, files: KafkaFiles, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            files.pid.unlink(missing_ok=True)
            raise ServiceStartError(
                f"SASL Kafka (pid {pid}) exited during start-up (exit code {exit_code(pid)}); "
                f"see {files.log}:\n{log_tail(files.log)}"
            )
        if _run_sync(kafka_answers_async(bootstrap, _PROBE_TIMEOUT_S, admin)):
            return
        time.sleep(_POLL_INTERVAL_S)
    stop(pid, name="SASL Kafka", term_timeout_s=STOP_TIMEOUT_S, log_path=files.log)
    files.pid.unlink(missing_ok=True)
    raise ServiceStartError(f"SASL Kafka did not answer at {bootstrap} within {timeout_s:.0f} s; see {files.log}")


def start_sasl_kafka(
    settings: DevSettings, users: Iterable[str], ready_timeout_s: float = READY_TIMEOUT_S
) -> SaslKafka:
    """Start (or reuse) the SASL broker at ``settings.kafka_bootstrap`` with SCRAM users ``users``.

    Users are created when the storage is first formatted; asking an existing broker
    for a user it does not have raises (``stop_sasl_kafka(..., wipe=True)`` and start again).
    """
    files = sasl_files(settings)
    bootstrap = settings.kafka_bootstrap
    users = sorted(set(users))
    formatted = (files.data / "meta.properties").is_file()
    passwords = _load_passwords(files.root / "credentials.json", users)
    known = set(json.loads((files.root / "users.json").read_text())) if formatted else set()
    if formatted and not set(users) <= known:
        raise ServiceStartError(
            f"the SASL broker in {files.root} was formatted without users {sorted(set(users) - known)}: "
            "stop it with wipe=True and start again"
        )
    admin = SaslCredentials(BROKER_ADMIN, passwords[BROKER_ADMIN], _MECHANISM)
    pid = live_pid(files.pid, _PROCESS_MARKER)
    if pid is None:
        host, port = parse_bootstrap(bootstrap)
        for busy in (port, port + 1):
            if tcp_open(host, busy):
                raise PortConflictError(f"{host}:{busy} is in use: the SASL broker needs {port} and {port + 1}")
        java = require_java()
        libs = kafka_libs(settings)
        files.root.mkdir(parents=True, exist_ok=True)
        files.config.write_text(sasl_server_properties(settings, files, passwords))
        files.config.chmod(0o600)  # it holds the broker's own passwords
        _format_storage(java, libs, files, passwords)
        (files.root / "users.json").write_text(json.dumps(sorted(known | set(users))))
        pid = spawn(_broker_argv(java, libs, settings, files), log_path=files.log, pid_path=files.pid, cwd=files.root)
    _wait_ready(bootstrap, admin, pid, files, ready_timeout_s)
    return SaslKafka(bootstrap, pid, files, passwords)


def stop_sasl_kafka(settings: DevSettings, *, wipe: bool = False) -> bool:
    """Stop the SASL broker (pid file); with ``wipe``, delete its data and credentials. True if it ran."""
    files = sasl_files(settings)
    pid = live_pid(files.pid, _PROCESS_MARKER)
    if pid is not None:
        stop(pid, name="SASL Kafka", term_timeout_s=STOP_TIMEOUT_S, log_path=files.log)
        files.pid.unlink(missing_ok=True)
    if wipe:
        shutil.rmtree(files.root, ignore_errors=True)
    return pid is not None
