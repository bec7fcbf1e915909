"""make compose-test's driver, offline: what it starts from docker-compose.yml, in which order, and where it looks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from tests.deploy.helpers import PROJECT_ROOT
from tools.compose_test.engine import Engine
from tools.compose_test.stack import OBSERVABILITY, Stack, external_bootstrap, published_ports

COMPOSE = PROJECT_ROOT / "docker-compose.yml"


def stack(tmp_path: Path, override: dict[str, Any] | None = None) -> Stack:
    return Stack(Engine("podman"), "test", COMPOSE, override or {}, tmp_path)


def test_the_core_starts_in_the_order_depends_on_gives(tmp_path: Path) -> None:
    waves = stack(tmp_path).start_order()
    assert waves[:2] == [["kafka", "keys", "redis-users", "reviewer-tokens"], ["redis", "topics"]]
    handrail = {"router", "validator", "circuit-breaker", "human-review"}
    assert handrail <= set(waves[2]) and all(n in handrail or n.startswith("worker-") for n in waves[2])
    assert len(waves) == 3


def test_the_observability_services_are_left_out_and_nothing_waits_for_them(tmp_path: Path) -> None:
    core = stack(tmp_path)
    assert set(yaml.safe_load(COMPOSE.read_text())["services"]) >= OBSERVABILITY
    assert not OBSERVABILITY & set(core.services)
    assert all(not OBSERVABILITY & set(core.dependencies(name)) for name in core.services)


def test_the_override_is_written_for_compose(tmp_path: Path) -> None:
    override = {"services": {"kafka": {"image": "localhost/handrail-kafka:4.3.1"}}}
    assert yaml.safe_load(stack(tmp_path, override).override_file.read_text()) == override


def test_the_host_reaches_kafka_and_the_review_service_on_the_published_ports() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    host, port = external_bootstrap(services["kafka"]).split(":")
    assert host == "localhost" and int(port) in published_ports(services["kafka"])
    assert published_ports(services["human-review"]) == [8086]
    assert published_ports({"ports": ["127.0.0.1:6379:6379", "9000"]}) == [6379]
