"""A whole Handrail deployment of the soak's own: Kafka, Redis, the model server and every service.

Ports are its own (``--base-port``, laid out as ``handrail_dev.ports`` says), so it runs beside a dev stack. Redis runs
without persistence: a SIGKILL loses everything, and correctness must not
depend on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import model_replay
from tests.fixtures.model_server import FakeModelServer

from handrail.contracts import Contracts, load_contracts
from handrail.tools import default_registry
from handrail.topics import Topics, ensure_topics
from handrail_dev import services
from handrail_dev.kafka import kafka_status, start_kafka, stop_kafka
from handrail_dev.process import is_alive
from handrail_dev.redis import redis_status, start_redis, stop_redis
from handrail_dev.settings import DevSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The reviewers the soak approves as (``config/reviewers.yaml``): one manager, two directors.
REVIEWERS = ("ana", "dan", "dora")


@dataclass
class Cluster:
    """Everything the soak runs, and how to hurt each part."""

    dev: DevSettings
    run_dir: Path
    topics: Topics = field(default_factory=lambda: Topics(f"chaos{secrets.token_hex(4)}."))
    tokens: dict[str, str] = field(default_factory=lambda: {r: secrets.token_urlsafe(16) for r in REVIEWERS})
    model: FakeModelServer | None = None
    contracts: Contracts | None = None
    processes: dict[str, services.ServiceProcess] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return self.dev.kafka_bootstrap

    @property
    def review_url(self) -> str:
        return f"http://127.0.0.1:{self.processes['human-review'].http_port}"

    @property
    def services_dir(self) -> Path:
        """Where the services write their logs, one file each."""
        return self.run_dir / "services"

    @property
    def ledger(self) -> Path:
        return self.run_dir / "data" / "expense-ledger.jsonl"

    def start(self, model: FakeModelServer) -> None:
        """Start Kafka, Redis and the services on the demo's contracts, every agent on ``model``."""
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        self.model = model
        config = model_replay.write_config(PROJECT_ROOT / "config", self.run_dir / "config", model.url)
        _short_model_timeouts(config)
        self.contracts = load_contracts(config, default_registry().names())
        start_kafka(self.dev)
        start_redis(self.dev)
        agents = sorted(self.contracts.agents)
        asyncio.run(ensure_topics(self.bootstrap, self.topics.specs(agents)))
        self.env = {
            **services.stack_env(self.dev),
            "HANDRAIL_TOPIC_PREFIX": self.topics.prefix,
            "HANDRAIL_REDIS_PREFIX": self.topics.prefix.replace(".", ":"),
            "HANDRAIL_GROUP_PREFIX": self.topics.prefix.replace(".", "-"),
            "HANDRAIL_CONFIG_DIR": str(config),
            "HANDRAIL_DATA_DIR": str(self.run_dir / "data"),
            "HANDRAIL_REVIEWER_TOKENS": json.dumps(self.tokens),
            "HANDRAIL_RETRY_BACKOFF_S": "0.2",
            model_replay.KEY_ENV: "chaos",
        }
        first_port = self.dev.ports.services
        plan = services.plan(agents, base_port=first_port)
        # A second replica of every worker: a frozen one's partitions move to it, and the frozen one
        # wakes up as a zombie that still holds its step.
        replicas = [
            services.ServiceProcess(f"{p.name}-2", p.argv, first_port + 30 + i)
            for i, p in enumerate(p for p in plan if p.name.startswith("worker-"))
        ]
        plan += replicas
        self.processes = {p.name: p for p in plan}
        services.up(plan, self.run_dir, self.env, PROJECT_ROOT)

    def stop(self) -> None:
        services.down(list(self.processes.values()), self.run_dir)
        stop_kafka(self.dev)
        stop_redis(self.dev)
        if self.model is not None:
            self.model.stop()

    def pid(self, name: str) -> int:
        found = services.running([self.processes[name]], self.run_dir)[name]
        if found is None:
            raise RuntimeError(f"{name} is not running")
        return found

    def kill_service(self, name: str) -> None:
        """SIGKILL ``name`` (no drain, no commit), then start it again and wait until it is healthy."""
        _kill(self.pid(name))
        process = self.processes[name]
        services.start(process, self.run_dir, self.env, PROJECT_ROOT)
        services.wait_ready(process, self.run_dir, timeout_s=120)

    def freeze_service(self, name: str, seconds: float) -> None:
        """SIGSTOP ``name`` for ``seconds`` (past its Kafka session timeout), then let it wake up."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def kill_kafka(self) -> None:
        """SIGKILL the broker, then start it again on the same log directory."""
        status = kafka_status(self.dev)
        assert status.pid is not None, "Kafka is not running"
        _kill(status.pid)
        start_kafka(self.dev)

    def kill_redis(self) -> None:
        """SIGKILL Redis, which runs without persistence: it comes back empty."""
        status = redis_status(self.dev)
        assert status.pid is not None, "Redis is not running"
        _kill(status.pid)
        start_redis(self.dev)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if not is_alive(pid):
            return
        time.sleep(0.05)
    raise RuntimeError(f"process {pid} survived SIGKILL")


def _short_model_timeouts(config: Path) -> None:
    """A hung model call times out after a few seconds and is retried, as a production chain would be set."""
    import yaml

    path = config / "models.yaml"
    catalogue = yaml.safe_load(path.read_text())
    for spec in catalogue["models"].values():
        if spec.get("base_url", "").startswith("http://127.0.0.1"):
            spec["timeout_s"], spec["max_retries"] = 3, 3
    path.write_text(yaml.safe_dump(catalogue))
