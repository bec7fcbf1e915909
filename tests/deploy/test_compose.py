"""docker-compose.yml: valid against the Compose specification, complete, and started in order."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from tests.deploy.helpers import PROJECT_ROOT

from handrail.contracts import load_contracts
from handrail.observability import TracingConfig
from handrail.observability.export import protocol, standard_exporter_names
from handrail.tools import default_registry

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
HANDRAIL_SERVICES = {"router": 8081, "validator": 8083, "circuit-breaker": 8085, "human-review": 8086}
INFRA = {"kafka", "redis", "topics", "keys", "redis-users", "reviewer-tokens"} | {
    "otel-collector", "jaeger", "prometheus", "grafana", "kafka-exporter"
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def agents() -> list[str]:
    return sorted(load_contracts(PROJECT_ROOT / "config", default_registry().names()).agents)


def compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON Schema, as vendored by the check-jsonschema package."""
    try:
        text = (resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    except ModuleNotFoundError:
        pytest.fail("check-jsonschema (a dev dependency) ships the Compose spec schema: pip install it")
    return dict(json.loads(text))


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_the_schema_check_catches_mistakes(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    broken = json.loads(json.dumps(compose))
    broken["services"]["router"]["depends_on"]["kafka"]["condition"] = "service_ready"
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    assert len(list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))) >= 2


def test_the_whole_stack_is_there_with_one_worker_per_agent(compose: dict[str, Any], agents: list[str]) -> None:
    services = compose["services"]
    workers = {name for name in services if name.startswith("worker-")}
    assert workers == {f"worker-{a}" for a in agents}
    assert set(services) == INFRA | set(HANDRAIL_SERVICES) | workers
    for agent in agents:
        assert services[f"worker-{agent}"]["command"] == ["worker-agent", "--agent", agent]
    for name, port in HANDRAIL_SERVICES.items():
        assert services[name]["command"] == [name]
        assert services[name]["environment"]["HANDRAIL_HTTP_PORT"] == str(port)
    assert services["kafka"]["image"] == "apache/kafka:4.3.1"  # the release the dev launcher runs
    assert services["topics"]["command"] == ["cli", "topics", "ensure"] and services["topics"]["restart"] == "no"


def test_services_come_up_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                check = services[dependency].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), f"{dependency} has no health check"
            if rule["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is not a one-shot job"
    for name in [*HANDRAIL_SERVICES, *(n for n in services if n.startswith("worker-"))]:
        deps = services[name]["depends_on"]
        assert deps["kafka"]["condition"] == deps["redis"]["condition"] == "service_healthy"
        assert deps["topics"]["condition"] == "service_completed_successfully"
        assert "handrail-healthcheck.py" in " ".join(services[name]["healthcheck"]["test"])
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def test_handrail_containers_are_locked_down(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("image") != "handrail:local":
            continue
        env = service["environment"]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert env["HANDRAIL_HTTP_HOST"] == "0.0.0.0" and env["HANDRAIL_KAFKA_BOOTSTRAP"] == "kafka:19092", name


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_every_handrail_container(compose: dict[str, Any], agents: list[str]) -> None:
    config = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for group in jobs["handrail"]["static_configs"] for t in group["targets"]}
    expected = {f"{n}:{p}" for n, p in HANDRAIL_SERVICES.items()} | {f"worker-{a}:8082" for a in agents}
    assert targets == expected
    assert jobs["kafka-exporter"]["static_configs"][0]["targets"] == ["kafka-exporter:9308"]


def test_traces_flow_from_the_collector_to_jaeger(compose: dict[str, Any]) -> None:
    collector = yaml.safe_load((PROJECT_ROOT / "deploy" / "otel" / "collector.yaml").read_text())
    traces = collector["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"] and traces["exporters"] == ["otlp/jaeger"]
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert compose["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"


def test_every_handrail_service_sends_its_traces_to_the_collector(compose: dict[str, Any], agents: list[str]) -> None:
    for name in [*HANDRAIL_SERVICES, *(f"worker-{a}" for a in agents)]:
        environment = compose["services"][name]["environment"]
        # What the service decides from its standard variables (HANDRAIL_OTEL_EXPORTER is not set).
        assert "HANDRAIL_OTEL_EXPORTER" not in environment
        config = TracingConfig(standard={k: str(v) for k, v in environment.items() if k.startswith("OTEL_")})
        assert standard_exporter_names(config) == ["otlp"] and protocol(config)[0] == "http/protobuf"
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert environment["OTEL_SERVICE_NAME"] == f"handrail-{name}"


def test_grafana_is_provisioned_with_the_dashboard(compose: dict[str, Any]) -> None:
    base = PROJECT_ROOT / "deploy" / "grafana"
    sources = yaml.safe_load((base / "provisioning" / "datasources" / "datasources.yaml").read_text())
    urls = {d["uid"]: d["url"] for d in sources["datasources"]}
    assert urls == {"prometheus": "http://prometheus:9090", "jaeger": "http://jaeger:16686"}
    provider = yaml.safe_load((base / "provisioning" / "dashboards" / "dashboards.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in compose["services"]["grafana"]["volumes"]
    assert Path(base / "dashboards" / "handrail.json").is_file()


def test_every_service_signs_with_its_own_key_made_by_the_keys_job(compose: dict[str, Any], agents: list[str]) -> None:
    services = compose["services"]
    command = services["keys"]["command"]
    folder = command[command.index("--out") + 1]
    signers = {**{name: name for name in HANDRAIL_SERVICES}, **{f"worker-{a}": a for a in agents}}
    # And the operators' key: the CLI signs halts, autonomy changes and the handoffs of `task resume|fork`.
    assert set(command[command.index("--out") + 2 :]) == {*signers.values(), "operator"}
    assert "--keep-existing" in command and services["keys"]["restart"] == "no"
    for name, signer in signers.items():
        service = services[name]
        assert service["environment"]["HANDRAIL_SIGNING_KEY_FILE"] == f"{folder}/{signer}.pem"
        assert service["environment"]["HANDRAIL_TRUSTED_KEYS_FILE"] == folder
        assert service["environment"].get("HANDRAIL_SIGNING_REQUIRED", "true") == "true"
        assert f"handrail-keys:{folder}:ro" in service["volumes"]
        assert service["depends_on"]["keys"]["condition"] == "service_completed_successfully"


def test_every_service_logs_in_to_redis_as_its_own_user(compose: dict[str, Any], agents: list[str]) -> None:
    services = compose["services"]
    job = services["redis-users"]
    folder = job["command"][job["command"].index("--out") + 1]
    assert job["restart"] == "no" and f"handrail-redis-users:{folder}" in job["volumes"]
    redis = services["redis"]
    acl = redis["command"][redis["command"].index("--aclfile") + 1]
    mounted = next(v for v in redis["volumes"] if v.startswith("handrail-redis-users:"))
    assert acl.startswith(mounted.split(":")[1] + "/") and mounted.endswith(":ro")
    assert redis["depends_on"]["redis-users"]["condition"] == "service_completed_successfully"
    who = {**{name: name for name in HANDRAIL_SERVICES}, **{f"worker-{a}": a for a in agents}, "topics": "operator"}
    for name, user in who.items():
        environment = services[name]["environment"]
        prefix = environment["HANDRAIL_REDIS_PREFIX"]
        assert environment["HANDRAIL_REDIS_USERNAME"] == f"{prefix}{user}", name
        assert environment["HANDRAIL_REDIS_PASSWORD_FILE"] == f"{folder}/{prefix}{user}.password", name
        assert f"handrail-redis-users:{folder}:ro" in services[name]["volumes"], name


def test_reviewers_log_in_with_tokens_the_job_makes_that_only_human_review_mounts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    job = services["reviewer-tokens"]
    assert job["command"] == ["cli", "review", "tokens"] and job["restart"] == "no"
    folder = job["environment"]["HANDRAIL_RUN_DIR"]
    assert job["volumes"] == [f"handrail-reviewer-tokens:{folder}"]
    review = services["human-review"]
    assert review["environment"]["HANDRAIL_REVIEWER_TOKENS_FILE"] == f"{folder}/reviewer-tokens.json"
    assert f"handrail-reviewer-tokens:{folder}:ro" in review["volumes"]
    assert review["depends_on"]["reviewer-tokens"]["condition"] == "service_completed_successfully"
    # human-review lists its volumes and dependencies itself: it must keep every one the others have.
    worker = next(s for n, s in services.items() if n.startswith("worker-"))
    assert set(worker["volumes"]) < set(review["volumes"])
    assert set(worker["depends_on"]) < set(review["depends_on"])
    mounting = {
        n for n, s in services.items() if any(v.startswith("handrail-reviewer-tokens:") for v in s.get("volumes", []))
    }
    assert mounting == {"human-review", "reviewer-tokens"}
    assert "secrets" not in compose, "no bind-mounted token file the services' user could not read"
