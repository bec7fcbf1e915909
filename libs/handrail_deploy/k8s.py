"""Kubernetes manifests for every workload, rendered from the contracts (``handrail k8s render``).

Per workload: a ServiceAccount (its identity), a Deployment (non-root, read-only
root filesystem, probes on ``/healthz``, requests and limits, its Kafka principal
and signing key), a Service, a PodDisruptionBudget and a HorizontalPodAutoscaler
on its consumer group's lag. Plus the ConfigMaps holding ``config/``
(``agents.yaml``, ``workflows.yaml``, ``models.yaml``, ..., and ``prompts/``), which
every pod sees as one read-only directory. The rest of the cluster setup
(namespace, network policies, settings) is hand-written in ``k8s/base``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from handrail.service.settings import RedisSettings
from handrail.state.acl import user_name
from handrail_deploy.workloads import Workload

Manifest = dict[str, Any]

PART_OF = "handrail"
IMAGE = "handrail"  # replaced per environment by kustomize `images:`
#: The user the image runs as (see the Dockerfile); fixed so volumes get the right group.
UID = 10001
#: Lag (messages) one replica is expected to work off; more means scale out.
TARGET_LAG_PER_REPLICA = "100"
#: More consumers than partitions would sit idle (handrail.topics.DEFAULT_PARTITIONS).
MAX_REPLICAS = 6
#: The external metric prometheus-adapter serves from kafka-exporter's series.
LAG_METRIC = "kafka_consumergroup_lag"
CONFIG_DIR = "/etc/handrail/config"
SIGNING_DIR = "/etc/handrail/signing"
#: The Redis key prefix of the manifests (HANDRAIL_REDIS_PREFIX is not set: the settings' default).
REDIS_PREFIX = str(RedisSettings.model_fields["redis_prefix"].default)
TRUST_DIR = "/etc/handrail/trust"
DATA_DIR = "/var/lib/handrail"


def labels(w: Workload) -> dict[str, str]:
    selector = {"app.kubernetes.io/name": w.name, "app.kubernetes.io/part-of": PART_OF}
    return {**selector, "app.kubernetes.io/component": w.component}


def _selector(w: Workload) -> dict[str, str]:
    return {"app.kubernetes.io/name": w.name, "app.kubernetes.io/part-of": PART_OF}


def _meta(name: str, w: Workload, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels(w)}
    if annotations:
        meta["annotations"] = annotations
    return meta


def contracts_configmaps(config_dir: Path) -> list[Manifest]:
    """``handrail-contracts`` (every file at the top of ``config/``) and ``handrail-prompts`` (``config/prompts/``)."""
    part = {"app.kubernetes.io/part-of": PART_OF}
    top = {p.name: p.read_text() for p in sorted(config_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}
    maps = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "handrail-contracts", "labels": part},
             "data": top}]  # fmt: skip
    prompts = _prompt_files(config_dir)
    if prompts:
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "handrail-prompts", "labels": part},
                     "data": {_prompt_key(rel): text for rel, text in prompts.items()}})  # fmt: skip
    return maps


def _prompt_files(config_dir: Path) -> dict[str, str]:
    """``prompts/<name>/<version>.md`` (relative to ``config_dir``) -> text."""
    root = config_dir / "prompts"
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) if root.is_dir() else []
    return {str(p.relative_to(config_dir)): p.read_text() for p in files}


def _prompt_key(relative: str) -> str:
    # ConfigMap keys cannot hold '/': the volume's `items` put each file back at its path.
    return relative.replace("/", "__")


def config_volume(config_dir: Path) -> dict[str, Any]:
    """One read-only directory with exactly the files of ``config/``, from the two ConfigMaps."""
    sources: list[dict[str, Any]] = [{"configMap": {"name": "handrail-contracts"}}]
    prompts = _prompt_files(config_dir)
    if prompts:
        items = [{"key": _prompt_key(rel), "path": rel} for rel in prompts]
        sources.append({"configMap": {"name": "handrail-prompts", "items": items}})
    return {"name": "config", "projected": {"sources": sources}}


def contracts_digest(configmaps: list[Manifest]) -> str:
    """A digest of the contract ConfigMaps: a pod-template annotation, so pods roll when contracts change."""
    data = [m["data"] for m in configmaps]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _env(w: Workload) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HANDRAIL_HTTP_PORT", "value": str(w.port)},
        {"name": "HANDRAIL_KAFKA_USERNAME", "value": w.principal},
        # Strimzi's User Operator writes each KafkaUser's password into a Secret of the same name.
        {
            "name": "HANDRAIL_KAFKA_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": w.principal, "key": "password", "optional": True}},
        },
        # Its own Redis ACL user (handrail.state.acl): `handrail redis users` makes the ACL file and passwords.
        {"name": "HANDRAIL_REDIS_USERNAME", "value": user_name(REDIS_PREFIX, w.signer)},
        {
            "name": "HANDRAIL_REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": f"handrail-redis-{w.signer}", "key": "password"}},
        },
        {"name": "HANDRAIL_SIGNER", "value": w.signer},
        {"name": "HANDRAIL_SIGNING_KEY_FILE", "value": f"{SIGNING_DIR}/private.pem"},
        {"name": "HANDRAIL_TRUSTED_KEYS_FILE", "value": f"{TRUST_DIR}/trusted-keys.json"},
        {"name": "OTEL_SERVICE_NAME", "value": f"handrail-{w.name}"},
    ]
    if w.agent is not None:
        env.insert(0, {"name": "HANDRAIL_AGENT", "value": w.agent.name})
    if w.name == "human-review":
        # Reviewers log in with these (a JSON object id -> token): `handrail review tokens`, then
        # `kubectl create secret generic handrail-reviewer-tokens --from-file=tokens.json=.run/reviewer-tokens.json`.
        secret = {"name": "handrail-reviewer-tokens", "key": "tokens.json", "optional": True}
        env.append({"name": "HANDRAIL_REVIEWER_TOKENS", "valueFrom": {"secretKeyRef": secret}})
    return env


def _container(w: Workload) -> dict[str, Any]:
    health = {"path": "/healthz", "port": "http"}
    return {
        "name": w.component,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": list(w.args),
        "ports": [{"name": "http", "containerPort": w.port, "protocol": "TCP"}],
        # Model API keys (the variables models.yaml names in `api_key_env`), when remote models are used.
        "envFrom": [
            {"configMapRef": {"name": "handrail-env"}},
            {"secretRef": {"name": "handrail-model-keys", "optional": True}},
        ],
        "env": _env(w),
        # Kafka and Redis must answer before the pod takes traffic or counts as started ...
        "startupProbe": {"httpGet": health, "periodSeconds": 2, "failureThreshold": 60},
        "readinessProbe": {"httpGet": health, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        # ... and a pod whose /healthz fails for minutes (Redis or Kafka down) is restarted; short
        # outages only take it out of rotation, so an outage never becomes a restart storm.
        "livenessProbe": {"httpGet": health, "periodSeconds": 20, "timeoutSeconds": 3, "failureThreshold": 9},
        "resources": {
            "requests": {"cpu": "100m", "memory": "192Mi", "ephemeral-storage": "64Mi"},
            "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "signing-key", "mountPath": SIGNING_DIR, "readOnly": True},
            {"name": "trusted-keys", "mountPath": TRUST_DIR, "readOnly": True},
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the container's own tmpfs
        ],
    }


def deployment(w: Workload, digest: str, config: dict[str, Any]) -> Manifest:
    annotations = {"handrail.dev/kafka-principal": f"User:{w.principal}", "handrail.dev/signer": w.signer}
    if w.agent is not None:
        a = w.agent
        annotations |= {
            "handrail.dev/owner": a.owner,
            "handrail.dev/risk-class": a.risk_class,
            "handrail.dev/autonomy": a.autonomy.value,
            "handrail.dev/model-chain": ",".join(a.model_chain),
            "handrail.dev/prompt": a.prompt,
            "handrail.dev/limits": json.dumps(a.limits.model_dump(), sort_keys=True),
        }
    pod_annotations = {
        "handrail.dev/contracts-sha256": digest,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(w.port),
        "prometheus.io/path": "/metrics",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(w.name, w, annotations),
        "spec": {
            # No `replicas`: the HorizontalPodAutoscaler owns the count.
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(w)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(w), "annotations": pod_annotations},
                "spec": {
                    "serviceAccountName": w.principal,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": _selector(w)},
                        },
                    ],
                    "containers": [_container(w)],
                    "volumes": [
                        config,
                        {
                            "name": "signing-key",
                            "secret": {
                                "secretName": f"handrail-signing-{w.signer}",
                                # Required: a pod without its key does not start (signatures are on).
                                "optional": False,
                                "defaultMode": 0o440,
                            },
                        },
                        {"name": "trusted-keys", "configMap": {"name": "handrail-trusted-keys", "optional": False}},
                        {"name": "data", "emptyDir": {"sizeLimit": "128Mi"}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def service_account(w: Workload) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(w.principal, w),
        "automountServiceAccountToken": False,
    }


def service(w: Workload) -> Manifest:
    ports = [{"name": "http", "port": w.port, "targetPort": "http", "protocol": "TCP"}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(w.name, w),
        "spec": {"type": "ClusterIP", "selector": _selector(w), "ports": ports},
    }


def disruption_budget(w: Workload) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(w.name, w),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(w)}},
    }


def autoscaler(w: Workload) -> Manifest:
    if w.consumer_group is not None:
        metric: dict[str, Any] = {
            "type": "External",
            "external": {
                "metric": {"name": LAG_METRIC, "selector": {"matchLabels": {"consumergroup": w.consumer_group}}},
                "target": {"type": "AverageValue", "averageValue": TARGET_LAG_PER_REPLICA},
            },
        }
    else:
        metric = {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(w.name, w),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name},
            "minReplicas": 1,
            "maxReplicas": MAX_REPLICAS,
            "metrics": [metric],
            # Lag comes in bursts: scale out at once, scale in slowly (each rebalance pauses the group).
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def model_egress_policy(w: Workload) -> Manifest:
    """HTTPS out of the cluster for a worker whose models are remote (model providers), nothing else."""
    private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{w.name}-model-egress", w),
        "spec": {
            "podSelector": {"matchLabels": _selector(w)},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": private}}],
                    "ports": [{"protocol": "TCP", "port": 443}],
                }
            ],
        },
    }


def mcp_egress_policy(w: Workload) -> Manifest:
    """Out to the ports of a worker's HTTP MCP servers, anywhere (a policy holds addresses, not their names)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{w.name}-mcp-egress", w),
        "spec": {
            "podSelector": {"matchLabels": _selector(w)},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "TCP", "port": port} for port in w.mcp_egress_ports]}],
        },
    }


def workload_manifests(w: Workload, digest: str, config: dict[str, Any]) -> list[Manifest]:
    """Everything one workload needs, in apply order; ``config`` is :func:`config_volume`."""
    manifests = [service_account(w), deployment(w, digest, config), service(w), disruption_budget(w), autoscaler(w)]
    if w.needs_model_egress:
        manifests.append(model_egress_policy(w))
    if w.mcp_egress_ports:
        manifests.append(mcp_egress_policy(w))
    return manifests
