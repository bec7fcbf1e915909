"""One base port per local stack: the ports it implies, and two stacks that share none."""

from __future__ import annotations

from pathlib import Path

import pytest

from handrail_dev import DevSettings, services
from handrail_dev.ports import STACK_SPAN, StackPorts

#: As many agents as a stack's span has room for (``handrail_dev.ports``).
_AGENTS = [f"agent-{i:02d}" for i in range(20)]


@pytest.fixture(autouse=True)
def _no_stack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HANDRAIL_BASE_PORT", "HANDRAIL_KAFKA_BOOTSTRAP", "HANDRAIL_REDIS_URL", "HANDRAIL_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)


def _ports(settings: DevSettings) -> list[int]:
    """Every port the stack of ``settings`` listens on."""
    ports = settings.ports
    planned = services.plan(_AGENTS, base_port=ports.services)
    return [ports.kafka, ports.controller, ports.redis, *(p.http_port for p in planned)]


def test_without_a_base_port_the_well_known_ports() -> None:
    settings = DevSettings()
    assert (settings.kafka_bootstrap, settings.redis_url) == ("127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    assert settings.run_dir == Path.cwd() / ".run"
    assert services.plan(["a"], base_port=settings.ports.services)[0].http_port == 8081
    assert services.plan(["a"])[0].http_port == 8081


def test_a_base_port_moves_kafka_redis_the_services_and_the_run_dir() -> None:
    settings = DevSettings(base_port=29500)
    assert settings.ports == StackPorts(kafka=29500, redis=29502, services=29510)
    assert (settings.kafka_bootstrap, settings.redis_url) == ("127.0.0.1:29500", "redis://127.0.0.1:29502/0")
    assert settings.run_dir == Path.cwd() / ".run" / "port-29500"
    by_name = {p.name: p.http_port for p in services.plan(["expense-intake"], base_port=settings.ports.services)}
    assert by_name == {
        "router": 29510, "validator": 29512, "circuit-breaker": 29514, "human-review": 29515,
        "worker-expense-intake": 29520,
    }  # fmt: skip


def test_two_stacks_a_span_apart_share_no_port() -> None:
    first, second = DevSettings(base_port=29500), DevSettings(base_port=29500 + STACK_SPAN)
    ports = [_ports(first), _ports(second)]
    for own, base in zip(ports, (29500, 29500 + STACK_SPAN), strict=True):
        assert len(set(own)) == len(own), "a stack's own ports collide"
        assert all(base <= port < base + STACK_SPAN for port in own)
    assert not set(ports[0]) & set(ports[1])
    assert first.run_dir != second.run_dir
    # Nor with a stack on the default ports.
    assert not set(_ports(DevSettings())) & (set(ports[0]) | set(ports[1]))


def test_the_environment_gives_the_base_port_and_an_explicit_address_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDRAIL_BASE_PORT", "29600")
    assert DevSettings().kafka_bootstrap == "127.0.0.1:29600"
    monkeypatch.setenv("HANDRAIL_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("HANDRAIL_RUN_DIR", "/tmp/elsewhere")
    settings = DevSettings()
    assert (settings.kafka_bootstrap, settings.redis_url) == ("127.0.0.1:9092", "redis://127.0.0.1:29602/0")
    assert settings.run_dir == Path("/tmp/elsewhere")
    assert settings.ports.services == 29610


def test_a_base_port_on_the_command_line_beats_addresses_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A drill (tools.chaos) kills its Kafka: one exported variable must not make that the shared one.
    monkeypatch.setenv("HANDRAIL_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("HANDRAIL_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("HANDRAIL_BASE_PORT", "29600")
    settings = DevSettings.at_base_port(29700, redis_persistence=False)
    assert (settings.base_port, settings.kafka_bootstrap) == (29700, "127.0.0.1:29700")
    assert (settings.redis_url, settings.redis_persistence) == ("redis://127.0.0.1:29702/0", False)
    assert settings.run_dir == Path.cwd() / ".run" / "port-29700"


def test_stack_env_tells_the_services_their_stacks_kafka_and_redis() -> None:
    env = services.stack_env(DevSettings(base_port=29500))
    assert env == {"HANDRAIL_KAFKA_BOOTSTRAP": "127.0.0.1:29500", "HANDRAIL_REDIS_URL": "redis://127.0.0.1:29502/0"}


def test_a_base_port_too_close_to_the_top_is_refused() -> None:
    with pytest.raises(ValueError, match="base_port"):
        DevSettings(base_port=65535 - STACK_SPAN + 1)
