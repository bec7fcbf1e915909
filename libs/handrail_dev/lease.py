"""Servers shared by users that come and go (test sessions): the last one out stops what a user started.

A user holds a lease on a server while it uses it. Taking the lease starts the server when
nothing answers at its address; the server is then the leases' own (an owner file says so, and
in which run dir its pid file is). When the last lease is let go, a server of the leases' own is
stopped. A server that answered before any lease was taken - ``make up``'s, another stack's - is
never stopped by one.

Per address, under ``<cache_dir>/leases``: ``<name>-<port>.gate`` (held while a lease is taken or
let go), ``<name>-<port>.users`` (held shared by every lease, so the one letting go can tell it is
the last) and ``<name>-<port>.owner``. Locks go with their process: a user that dies holds none.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from handrail_dev.kafka import parse_bootstrap, start_kafka, stop_kafka
from handrail_dev.redis import start_redis, stop_redis
from handrail_dev.settings import DevSettings
from handrail_dev.state import ServiceStatus

FOLDER = "leases"


@dataclass(frozen=True)
class Server:
    """A server leases can share: its name, its port in the settings, how to start and stop it."""

    name: str
    port: Callable[[DevSettings], int]
    start: Callable[[DevSettings], ServiceStatus]
    stop: Callable[[DevSettings], ServiceStatus]


KAFKA = Server("kafka", lambda s: parse_bootstrap(s.kafka_bootstrap)[1], start_kafka, stop_kafka)
REDIS = Server("redis", lambda s: urlsplit(s.redis_url).port or 6379, start_redis, stop_redis)


@contextlib.contextmanager
def _locked(path: Path, operation: int) -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, operation)
        yield handle


@contextlib.contextmanager
def lease(server: Server, settings: DevSettings) -> Iterator[ServiceStatus]:
    """Use ``server`` at ``settings``' address, started if nothing answers there, until the block ends.

    Yields what ``server.start`` reported. Raises what it raises (``DevInfraError``), holding nothing.
    """
    base = settings.cache_dir / FOLDER / f"{server.name}-{server.port(settings)}"
    gate, users, owner = (base.with_suffix(suffix) for suffix in (".gate", ".users", ".owner"))
    with contextlib.ExitStack() as held:
        with _locked(gate, fcntl.LOCK_EX):
            status = server.start(settings)
            if status.changed:
                owner.write_text(f"{settings.run_dir.resolve()}\n")
            # Taken while the gate is held: whoever lets go next sees this user.
            mine = held.enter_context(_locked(users, fcntl.LOCK_SH))
        try:
            yield status
        finally:
            with _locked(gate, fcntl.LOCK_EX):
                fcntl.flock(mine, fcntl.LOCK_UN)
                _stop_if_last(server, settings, users, owner)


def _stop_if_last(server: Server, settings: DevSettings, users: Path, owner: Path) -> None:
    """Stop the server when no other lease holds it and a lease started it (called with the gate held)."""
    with users.open("a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another user: the last one stops it
    try:
        run_dir = Path(owner.read_text().strip())
    except OSError:
        return  # it answered before any lease: not ours to stop
    server.stop(settings.model_copy(update={"run_dir": run_dir}))
    owner.unlink(missing_ok=True)
