"""Leases on the dev servers: a test session stops what it started, and only that, and only when it is the last."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from handrail_dev import DevSettings, ServiceStartError, ServiceState, ServiceStatus
from handrail_dev.lease import Server, lease

pytestmark = pytest.mark.timeout(20)  # a lock left held would hang the next lease


@dataclass
class FakeServer:
    """A server that is running or not; ``start`` starts it when it is not, and says whether it did."""

    running: bool = False
    fail: bool = False
    stopped_in: list[Path] = field(default_factory=list)

    def start(self, settings: DevSettings) -> ServiceStatus:
        if self.fail:
            raise ServiceStartError("no java")
        changed, self.running = not self.running, True
        return ServiceStatus("fake", ServiceState.RUNNING, "127.0.0.1:1", changed=changed)

    def stop(self, settings: DevSettings) -> ServiceStatus:
        self.running = False
        self.stopped_in.append(settings.run_dir)
        return ServiceStatus("fake", ServiceState.STOPPED, "127.0.0.1:1", changed=True)

    def server(self) -> Server:
        return Server("fake", lambda settings: 1, self.start, self.stop)


def _settings(tmp_path: Path, run_dir: str = "run") -> DevSettings:
    return DevSettings(kafka_bootstrap="127.0.0.1:1", cache_dir=tmp_path / "cache", run_dir=tmp_path / run_dir)


def test_a_server_the_lease_started_is_stopped_when_it_is_let_go(tmp_path: Path) -> None:
    fake = FakeServer()
    with lease(fake.server(), _settings(tmp_path)) as status:
        assert status.changed and fake.running
    assert not fake.running
    assert fake.stopped_in == [(tmp_path / "run").resolve()]


def test_a_server_that_answered_before_is_left_running(tmp_path: Path) -> None:
    fake = FakeServer(running=True)  # `make infra`'s, or someone else's
    with lease(fake.server(), _settings(tmp_path)) as status:
        assert not status.changed
    assert fake.running and fake.stopped_in == []


def test_the_last_of_overlapping_leases_stops_it_in_the_run_dir_that_started_it(tmp_path: Path) -> None:
    fake = FakeServer()
    first = lease(fake.server(), _settings(tmp_path, "first"))
    first.__enter__()
    with lease(fake.server(), _settings(tmp_path, "second")) as status:
        assert not status.changed  # the first one's
        first.__exit__(None, None, None)
        assert fake.running, "stopped under a lease still held"
    assert not fake.running
    assert fake.stopped_in == [(tmp_path / "first").resolve()]


def test_a_lease_on_a_server_another_lease_started_and_left_stops_it(tmp_path: Path) -> None:
    fake = FakeServer()
    with lease(fake.server(), _settings(tmp_path)):
        pass
    fake.running = True  # started again, outside any lease: nobody's to stop
    with lease(fake.server(), _settings(tmp_path)):
        pass
    assert fake.running and len(fake.stopped_in) == 1


def test_a_failed_start_holds_nothing(tmp_path: Path) -> None:
    fake = FakeServer(fail=True)
    with pytest.raises(ServiceStartError), lease(fake.server(), _settings(tmp_path)):
        pass
    fake.fail = False
    with lease(fake.server(), _settings(tmp_path)) as status:  # would wait forever on a held gate
        assert status.changed
    assert not fake.running


def test_a_session_that_raises_still_stops_what_it_started(tmp_path: Path) -> None:
    fake = FakeServer()
    with pytest.raises(RuntimeError), lease(fake.server(), _settings(tmp_path)):
        raise RuntimeError("a test session ends badly")
    assert not fake.running
