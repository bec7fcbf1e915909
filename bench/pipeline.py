"""Pipeline benchmark: Handrail's ``expense-approval`` workflow against a raw aiokafka relay.

Run on demand on the real broker (``make infra``, then ``make bench``); never in CI.
Both systems move every task over the same five hops, each consumer in its own
process, each output published idempotently with ``acks=all`` and the input's offset
committed only after that publish was acknowledged::

    tasks -> agent.expense-intake -> steps -> agent.expense-approver -> steps -> results
       router        worker intake     validator     worker approver    validator

Per system: a warm-up burst, a paced phase (one task in flight: per-hop latency without
queueing), then a burst of ``--tasks`` (throughput, and CPU per task from ``/proc``).
Afterwards every record is read back with a group-less reader; a hop's latency is the
difference between the Kafka record timestamps of a task's consecutive messages
(key = task id). The relay pads its messages to Handrail's mean size at each stage.
``bench/README.md`` explains how to read the report.

    BenchError    a phase could not finish (infra unreachable, a dead letter, results missing)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import runpy
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import model_replay  # bench/, beside this file
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from handrail.bus import make_admin, make_producer
from handrail.client import follow, open_reader
from handrail.contracts import load_contracts
from handrail.errors import HandrailError
from handrail.messages import TaskSubmitted
from handrail.tools import default_registry
from handrail.topics import Topics, TopicSpec, ensure_topics
from handrail_dev import services
from handrail_dev.errors import ServiceStopError
from handrail_dev.process import live_pid, tcp_open

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = "expense-approval"
#: The topic (without prefix) of each message of a task, in order; hop i goes from stage i to i + 1.
STAGES = ("tasks", "agent.expense-intake", "steps", "agent.expense-approver", "steps", "results")
HOPS = ("router", "worker intake", "validator", "worker approver", "validator end")
#: Which service consumes each topic (Handrail's process names; the relay's are ``relay-<name>``).
CONSUMERS = {
    "tasks": "router",
    "agent.expense-intake": "worker-expense-intake",
    "steps": "validator",
    "agent.expense-approver": "worker-expense-approver",
}
#: Claims that complete in five hops, without a person: approved under the 500 USD limit, or rejected
#: (a former employee). A claim that needs a manager would wait for a human review instead.
CLAIMS: tuple[dict[str, Any], ...] = (
    {"employee_id": "E100", "amount": 42.5, "currency": "EUR", "description": "team lunch"},
    {"employee_id": "E101", "amount": 120, "currency": "USD", "description": "client dinner"},
    {"employee_id": "E102", "amount": 300, "currency": "GBP", "description": "train tickets"},
    {"employee_id": "E103", "amount": 90, "currency": "USD", "description": "taxi"},
)
#: The targets the report checks: Handrail keeps half the relay's throughput and adds under 1 ms a hop.
TARGET_RATIO = 0.5
TARGET_ADDED_MS = 1.0
#: A reader that sees nothing for this long has read everything already written.
_READ_IDLE_S = 1.5
#: One task in flight should take milliseconds; this only bounds a stuck pipeline.
_PACED_TIMEOUT_S = 30.0
#: What a relay process prints once its group gave it partitions.
READY_LINE = "relay hop ready"


class BenchError(Exception):
    """A phase could not finish (infra unreachable, a dead letter, results missing); the message says what to check."""


# --- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """One task's record timestamps (ms) and value sizes (bytes), stage by stage."""

    timestamps_ms: tuple[int, ...]
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class Spread:
    """Percentiles and mean of a latency sample, in ms."""

    p50: float
    p95: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(math.nan, math.nan, math.nan, math.nan)
        ordered = sorted(values)
        mean = sum(ordered) / len(ordered)
        return cls(_quantile(ordered, 0.5), _quantile(ordered, 0.95), _quantile(ordered, 0.99), mean)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used during the burst: by each consumer process, and by the whole machine."""

    by_process: dict[str, float]
    machine_s: float
    wall_s: float

    @classmethod
    def sample(cls, pids: dict[str, int]) -> Cpu:
        return cls({name: _process_cpu_s(pid) for name, pid in pids.items()}, _machine_cpu_s(), time.monotonic())

    def since(self, before: Cpu) -> Cpu:
        spent = {n: s - before.by_process.get(n, s) for n, s in self.by_process.items()}
        return Cpu(spent, self.machine_s - before.machine_s, self.wall_s - before.wall_s)


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0 where there is no procfs)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _machine_cpu_s() -> float:
    """Busy CPU seconds of all cores since boot: everything but idle and iowait."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measurement:
    """What one system did: the burst's wall time, statuses and CPU, and every task's trace."""

    name: str
    tasks: int
    elapsed_s: float
    statuses: Counter[str]
    cpu: Cpu
    redis_commands: Counter[str]
    records: Counter[str]
    traces: dict[str, Trace]

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.elapsed_s

    def hops(self, phase: str) -> list[Spread]:
        """Latency per hop, then end to end, over the tasks of ``phase``."""
        stamps = [t.timestamps_ms for key, t in self.traces.items() if key.startswith(f"{phase}-")]
        per_hop = [Spread.of([s[i + 1] - s[i] for s in stamps]) for i in range(len(HOPS))]
        return [*per_hop, Spread.of([s[-1] - s[0] for s in stamps])]

    def mean_sizes(self) -> list[int]:
        """Mean value size at each stage, in bytes."""
        sizes = [t.sizes for t in self.traces.values()]
        return [round(sum(s[i] for s in sizes) / len(sizes)) for i in range(len(STAGES))]


def task_ids(phase: str, run_id: str, count: int) -> list[str]:
    return [f"{phase}-{run_id}-{i:05d}" for i in range(count)]


class Driver:
    """Submits tasks on a system's tasks topic and waits for their results.

    ``detours`` maps topics where a task must never go (the dead-letter queue, human review) to
    what a record there means; one for a pending task fails the run at once instead of at the timeout.
    """

    def __init__(
        self, bootstrap: str, prefix: str, make_task: Callable[[str, int], bytes], detours: dict[str, str]
    ) -> None:
        self.bootstrap = bootstrap
        self.tasks_topic, self.results_topic, self.detours = prefix + STAGES[0], prefix + STAGES[-1], detours
        self.make_task = make_task
        self.producer = make_producer(bootstrap, "bench-driver")
        self.reader: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Driver:
        await self.producer.start()
        self.reader = await open_reader(self.bootstrap, [self.results_topic, *self.detours], from_time_ms=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.reader is not None:
            await self.reader.stop()
        await self.producer.stop()

    async def burst(self, ids: list[str], timeout_s: float) -> tuple[float, Counter[str]]:
        """Send every task at once; return the seconds until the last result arrived, and the statuses."""
        started = time.perf_counter()
        waiting = asyncio.create_task(self._collect(set(ids), timeout_s))
        try:
            acks = [
                await self.producer.send(self.tasks_topic, self.make_task(t, i), key=t.encode())
                for i, t in enumerate(ids)
            ]
            await asyncio.gather(*acks)
            statuses = await waiting
        finally:
            waiting.cancel()
        return time.perf_counter() - started, statuses

    async def paced(self, ids: list[str]) -> Counter[str]:
        """Send one task at a time, each after the previous one's result."""
        statuses: Counter[str] = Counter()
        for i, task_id in enumerate(ids):
            await self.producer.send_and_wait(self.tasks_topic, self.make_task(task_id, i), key=task_id.encode())
            statuses += await self._collect({task_id}, _PACED_TIMEOUT_S)
        return statuses

    async def _collect(self, wanted: set[str], timeout_s: float) -> Counter[str]:
        assert self.reader is not None, "use the driver as an async context manager"
        statuses: Counter[str] = Counter()
        pending = {w.encode() for w in wanted}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise BenchError(f"{len(pending)} of {len(wanted)} results missing after {timeout_s:g}s")
            batch = await self.reader.getmany(timeout_ms=200)
            for record in (r for records in batch.values() for r in records):
                if record.key not in pending:
                    continue
                body = json.loads(record.value or b"{}")
                if record.topic in self.detours:
                    why = ": ".join(str(body[k]) for k in ("service", "error_type", "reason") if body.get(k))
                    raise BenchError(f"task {record.key.decode()} was {self.detours[record.topic]}: {why}")
                pending.discard(record.key)
                statuses[body.get("status", "relayed")] += 1
        return statuses


async def read_traces(bootstrap: str, prefix: str) -> dict[str, Trace]:
    """Every complete task trace under ``prefix``, read back from the start of each topic."""
    topics = list(dict.fromkeys(prefix + s for s in STAGES))
    reader = await open_reader(bootstrap, topics, from_time_ms=0)
    seen: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    try:
        async for r in follow(reader, idle_timeout_s=_READ_IDLE_S):
            key = (r.key or b"").decode()
            seen[key, r.topic.removeprefix(prefix)].append((r.offset, r.timestamp, len(r.value or b"")))
    finally:
        await reader.stop()
    traces: dict[str, Trace] = {}
    for key in {k for k, _ in seen}:
        # A topic visited twice (steps) holds the task's records in offset order: one partition per key.
        records = {stage: sorted(seen[key, stage]) for stage in set(STAGES)}
        picks = [records[s][STAGES[:i].count(s)] for i, s in enumerate(STAGES) if len(records[s]) > STAGES[:i].count(s)]
        if len(picks) == len(STAGES):
            traces[key] = Trace(tuple(p[1] for p in picks), tuple(p[2] for p in picks))
    return traces


async def measure(
    name: str,
    prefix: str,
    make_task: Callable[[str, int], bytes],
    pids: dict[str, int],
    args: argparse.Namespace,
    detours: dict[str, str] | None = None,
    paced: int | None = None,
) -> Measurement:
    """Warm up, run the paced phase and the burst, then read every trace back."""
    paced = args.paced if paced is None else paced
    timeout_s = 60.0 + args.tasks * 0.2  # generous: a 2-core machine running Kafka, Redis and every service
    async with Driver(args.bootstrap, prefix, make_task, detours or {}) as driver:
        print(f"  {name}: warm-up ({args.warmup} tasks)", flush=True)
        await driver.burst(task_ids("warm", args.run_id, args.warmup), timeout_s)
        if paced:
            print(f"  {name}: paced ({paced} tasks, one in flight)", flush=True)
            await driver.paced(task_ids("paced", args.run_id, paced))
        print(f"  {name}: burst ({args.tasks} tasks)", flush=True)
        before, commands_before = Cpu.sample(pids), await redis_commands(args.redis_url)
        elapsed_s, statuses = await driver.burst(task_ids("burst", args.run_id, args.tasks), timeout_s)
        cpu, commands = Cpu.sample(pids).since(before), await redis_commands(args.redis_url) - commands_before
    records = await records_by_topic(args.bootstrap, prefix)
    traces = await read_traces(args.bootstrap, prefix)
    return Measurement(name, args.tasks, elapsed_s, statuses, cpu, commands, records, traces)


async def redis_commands(url: str) -> Counter[str]:
    """Commands Redis ran since it started, counting those inside Lua scripts (every client's, not only ours)."""
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    calls = Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})
    del calls["info"]  # this very probe
    return calls


async def records_by_topic(bootstrap: str, prefix: str) -> Counter[str]:
    """How many records each topic under ``prefix`` holds (its partitions' end offsets: the topics are fresh)."""
    admin = make_admin(bootstrap, "bench")
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()
    reader = await open_reader(bootstrap, topics, from_time_ms=None)
    try:
        ends = await reader.end_offsets(list(reader.assignment()))
    finally:
        await reader.stop()
    counts: Counter[str] = Counter()
    for tp, end in ends.items():
        counts[tp.topic.removeprefix(prefix)] += end
    return counts


# --- the raw relay --------------------------------------------------------------------------------


def relay_message(task_id: str, stage: int, size: int) -> bytes:
    """A JSON message padded to about ``size`` bytes."""
    body = {"task_id": task_id, "stage": stage, "pad": ""}
    pad = max(0, size - len(json.dumps(body, separators=(",", ":"))))
    return json.dumps({**body, "pad": "x" * pad}, separators=(",", ":")).encode()


async def relay_hop(bootstrap: str, group: str, source: str, routes: dict[int, tuple[str, int]], batch: int) -> None:
    """Consume ``source``, publish each message on to its next stage's topic, commit after the acks."""
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await consumer.start()
    await producer.start()
    try:
        # aiokafka joins the group in the background and offers no event to await.
        while not consumer.assignment() and not stopping.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        print(READY_LINE, flush=True)
        while not stopping.is_set():
            polled = await consumer.getmany(timeout_ms=200, max_records=batch)
            acks = []
            for record in (r for records in polled.values() for r in records):
                message = json.loads(record.value)
                topic, size = routes[message["stage"] + 1]
                out = relay_message(message["task_id"], message["stage"] + 1, size)
                acks.append(await producer.send(topic, out, key=record.key))
            if acks:
                await asyncio.gather(*acks)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def relay_plan(args: argparse.Namespace, prefix: str, sizes: list[int]) -> list[services.ServiceProcess]:
    """One relay process per consumed topic, routing each stage on to the next as Handrail's services do."""
    plan = []
    for source, consumer in CONSUMERS.items():
        routes = {i + 1: (prefix + STAGES[i + 1], sizes[i + 1]) for i, s in enumerate(STAGES[:-1]) if s == source}
        name = f"relay-{consumer}"
        argv = (sys.executable, str(Path(__file__).resolve()), "relay-hop", "--bootstrap", args.bootstrap,
                "--group", f"bench-{args.run_id}-{name}", "--source", prefix + source, "--routes", json.dumps(routes),
                "--batch", str(args.relay_batch), "--name", f"{name}-{args.run_id}")  # fmt: skip
        plan.append(services.ServiceProcess(name, argv, http_port=0))
    return plan


def _relay_hop_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/pipeline.py relay-hop")
    for flag in ("--bootstrap", "--group", "--source", "--routes", "--name"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    routes = {int(stage): (topic, size) for stage, (topic, size) in json.loads(args.routes).items()}
    asyncio.run(relay_hop(args.bootstrap, args.group, args.source, routes, args.batch))
    return 0


# --- Handrail -------------------------------------------------------------------------------------


def handrail_task(task_id: str, index: int) -> bytes:
    claim = CLAIMS[index % len(CLAIMS)]
    return TaskSubmitted(task_id=task_id, workflow=WORKFLOW, input=claim, submitted_by="bench").to_bytes()


def handrail_plan(agents: list[str], run_id: str, profile_dir: Path | None) -> list[services.ServiceProcess]:
    """Router, validator and one worker per agent, on free ports.

    With ``profile_dir``, each runs under cProfile and writes ``<profile_dir>/<name>.prof`` when stopped.
    """
    plan = []
    for p in services.plan(agents, base_port=0):
        # Consumer groups of its own: never rebalance with another stack on the broker.
        env = {"HANDRAIL_GROUP_PREFIX": f"bench-{run_id}-"}
        argv = p.argv
        if profile_dir is not None:
            # (python, -m, module, args...) -> (python, this file, profile-service, out, module, args...)
            out = str(profile_dir / f"{p.name}.prof")
            argv = (argv[0], str(Path(__file__).resolve()), "profile-service", out, *argv[2:])
        plan.append(services.ServiceProcess(p.name, argv, _free_port(), env))
    return plan


def _profile_service_main(argv: list[str]) -> int:
    """Run ``python -m MODULE ARGS`` under cProfile and write the stats when it stops.

    Not ``python -m cProfile``: uvicorn re-raises SIGTERM after its graceful shutdown, and the
    default action would kill the process before cProfile writes anything.
    """
    out, module, *rest = argv
    profile = cProfile.Profile()

    def finish(signum: int, frame: FrameType | None) -> NoReturn:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, finish)  # what uvicorn restores, then re-raises
    sys.argv = [module, *rest]
    profile.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        profile.disable()
        profile.dump_stats(out)
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the run --------------------------------------------------------------------------------------


def run(
    args: argparse.Namespace, run_dir: Path, started: list[services.ServiceProcess]
) -> tuple[Measurement, Measurement]:
    """Measure Handrail, then the relay; every process is added to ``started`` before it starts."""
    agents = sorted(load_contracts(PROJECT_ROOT / "config", default_registry().names()).agents)
    handrail_topics, relay_prefix = Topics(f"bench{args.run_id}."), f"relay{args.run_id}."
    relay_specs = [TopicSpec(relay_prefix + s) for s in dict.fromkeys(STAGES)]
    asyncio.run(ensure_topics(args.bootstrap, handrail_topics.specs(agents) + relay_specs))

    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    plan = handrail_plan(agents, args.run_id, args.profile)
    started += plan
    env = {
        "HANDRAIL_KAFKA_BOOTSTRAP": args.bootstrap,
        "HANDRAIL_REDIS_URL": args.redis_url,
        "HANDRAIL_TOPIC_PREFIX": handrail_topics.prefix,
        "HANDRAIL_REDIS_PREFIX": f"bench{args.run_id}:",
        "HANDRAIL_CONFIG_DIR": str(PROJECT_ROOT / "config"),
        "HANDRAIL_DATA_DIR": str(run_dir / "data"),
        # Observability on, as in production: spans exported (to files here), audit written, metrics kept.
        "HANDRAIL_OTEL_EXPORTER": f"file:{run_dir}/spans-{{service}}.jsonl",
    }
    print(f"starting Handrail: {', '.join(p.name for p in plan)}", flush=True)
    services.up(plan, run_dir, env, PROJECT_ROOT)
    detours = {handrail_topics.dlq: "dead-lettered", handrail_topics.reviews_requested: "sent to human review"}
    handrail = asyncio.run(
        measure("Handrail", handrail_topics.prefix, handrail_task, _pids(plan, run_dir), args, detours)
    )
    services.down(plan, run_dir)  # idle consumers still poll: leave the cores to the relay
    args.handrail_off = None
    if args.observability_off:
        # The same run with tracing and the audit trail switched off (metrics are in-process counters: kept).
        off_topics = Topics(f"bench{args.run_id}off.")
        asyncio.run(ensure_topics(args.bootstrap, off_topics.specs(agents)))
        off_env = {
            **env,
            "HANDRAIL_TOPIC_PREFIX": off_topics.prefix,
            "HANDRAIL_REDIS_PREFIX": f"bench{args.run_id}off:",
            "HANDRAIL_OTEL_EXPORTER": "off",
            "HANDRAIL_AUDIT_ENABLED": "false",
        }
        off_plan = handrail_plan(agents, f"{args.run_id}off", None)
        started += off_plan
        print("starting Handrail with tracing and audit off", flush=True)
        services.up(off_plan, run_dir / "off", off_env, PROJECT_ROOT)
        args.handrail_off = asyncio.run(
            measure(
                "Handrail, observability off",
                off_topics.prefix,
                handrail_task,
                _pids(off_plan, run_dir / "off"),
                args,
                detours,
            )
        )
        services.down(off_plan, run_dir / "off")
    args.handrail_model = None
    if args.model_latency_ms is not None:
        args.handrail_model = _run_with_model_latency(args, run_dir, started, agents, env, detours)
    if args.profile is not None:
        print(f"profiles: {args.profile}/<service>.prof (python -m pstats; sort tottime; stats 25)", flush=True)

    sizes = handrail.mean_sizes()
    relay_processes = relay_plan(args, relay_prefix, sizes)
    started += relay_processes
    print(f"starting the relay: {', '.join(p.name for p in relay_processes)}", flush=True)
    for process in relay_processes:
        services.start(process, run_dir, env, PROJECT_ROOT)
    for process in relay_processes:
        _wait_logged(process, run_dir, READY_LINE, timeout_s=60.0)
    relay = asyncio.run(
        measure(
            "raw relay", relay_prefix, lambda t, i: relay_message(t, 0, sizes[0]), _pids(relay_processes, run_dir), args
        )
    )
    services.down(relay_processes, run_dir)
    return handrail, relay


@dataclass(frozen=True)
class ModelRun:
    """The burst with a model that takes ``latency_ms`` per completion, and the model server's view of it."""

    measurement: Measurement
    latency_ms: float
    calls: int
    peak_in_flight: int
    mean_in_flight: float


def _run_with_model_latency(
    args: argparse.Namespace,
    run_dir: Path,
    started: list[services.ServiceProcess],
    agents: list[str],
    env: dict[str, str],
    detours: dict[str, str],
) -> ModelRun:
    """Handrail again, each agent on the OpenAI-compatible provider against the plan-replaying server."""
    server = model_replay.start_server(PROJECT_ROOT / "config", args.model_latency_ms)
    try:
        config = model_replay.write_config(PROJECT_ROOT / "config", run_dir / "model-config", server.url)
        topics = Topics(f"bench{args.run_id}model.")
        asyncio.run(ensure_topics(args.bootstrap, topics.specs(agents)))
        model_env = {
            **env,
            "HANDRAIL_TOPIC_PREFIX": topics.prefix,
            "HANDRAIL_REDIS_PREFIX": f"bench{args.run_id}model:",
            "HANDRAIL_CONFIG_DIR": str(config),
            model_replay.KEY_ENV: "local-bench-key",
        }
        plan = handrail_plan(agents, f"{args.run_id}model", None)
        started += plan
        print(f"starting Handrail with a {args.model_latency_ms:g} ms model (OpenAI-compatible, local)", flush=True)
        services.up(plan, run_dir / "model", model_env, PROJECT_ROOT)
        pids = _pids(plan, run_dir / "model")
        name = f"Handrail, {args.model_latency_ms:g} ms model"
        calls_before = len(server.requests())
        busy_before = server.busy_s
        measurement = asyncio.run(measure(name, topics.prefix, handrail_task, pids, args, detours, paced=0))
        services.down(plan, run_dir / "model")
        burst_calls = len(server.requests()) - calls_before
        return ModelRun(
            measurement,
            args.model_latency_ms,
            burst_calls,
            server.peak_in_flight,
            (server.busy_s - busy_before) / measurement.elapsed_s,
        )
    finally:
        server.stop()


def _pids(plan: Iterable[services.ServiceProcess], run_dir: Path) -> dict[str, int]:
    """Each running consumer's pid, by the name of the service it stands for."""
    running = services.running(list(plan), run_dir)
    return {name.removeprefix("relay-"): pid for name, pid in running.items() if pid is not None}


def _wait_logged(process: services.ServiceProcess, run_dir: Path, line: str, timeout_s: float) -> None:
    pid_path, log_path = process.paths(run_dir)
    deadline = time.monotonic() + timeout_s
    while line not in log_path.read_text(errors="replace"):
        if live_pid(pid_path, process.argv[-1]) is None or time.monotonic() > deadline:
            raise BenchError(f"{process.name} did not start; see {log_path}")
        time.sleep(0.1)


async def cleanup(bootstrap: str, redis_url: str, topic_prefixes: tuple[str, ...], redis_prefix: str) -> None:
    """Delete the run's topics and Redis keys (finished tasks would otherwise linger for a week)."""
    admin = make_admin(bootstrap, "bench")
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(topic_prefixes)]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
    finally:
        await client.aclose()


# --- the report -----------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def _cpu_line(m: Measurement) -> str:
    per_task = {name: s * 1000 / m.tasks for name, s in m.cpu.by_process.items()}
    names = [*CONSUMERS.values(), *sorted(set(per_task) - set(CONSUMERS.values()))]  # then off-path services
    parts = [f"{name.removeprefix('worker-expense-')} {per_task.get(name, math.nan):.2f}" for name in names]
    rest = (m.cpu.machine_s - sum(m.cpu.by_process.values())) * 1000 / m.tasks
    busy = m.cpu.machine_s / m.cpu.wall_s / (os.cpu_count() or 1)
    total = m.cpu.machine_s * 1000 / m.tasks
    return f"{', '.join(parts)}; rest {rest:.2f}; machine {total:.2f} (cores {busy:.0%} busy)"


def _work_line(m: Measurement, args: argparse.Namespace) -> str:
    tasks = args.warmup + args.paced + args.tasks
    kinds: Counter[str] = Counter()
    for topic, count in m.records.items():
        kinds["agent.*" if topic.startswith("agent.") else topic] += count
    records = ", ".join(f"{t} {n / tasks:.1f}" for t, n in sorted(kinds.items(), key=lambda kv: -kv[1]) if n)
    redis = sum(m.redis_commands.values()) / m.tasks
    scripts = (m.redis_commands["evalsha"] + m.redis_commands["eval"]) / m.tasks
    kafka = sum(kinds.values()) / tasks
    return f"Redis commands {redis:5.1f} ({scripts:.1f} scripts) | Kafka records {kafka:4.1f} ({records})"


def report(args: argparse.Namespace, handrail: Measurement, relay: Measurement) -> str:
    """The compact, printable comparison."""
    ratio = handrail.tasks_per_s / relay.tasks_per_s
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(handrail.statuses.items()))
    labels = [*(f"{i + 1} {HOPS[i]:<15} {STAGES[i]} -> {STAGES[i + 1]}" for i in range(len(HOPS))), "end to end"]
    width = max(map(len, labels))
    lines = [
        "",
        f"Handrail pipeline benchmark - {WORKFLOW}, {len(HOPS)} hops, Kafka {args.bootstrap}, run {args.run_id}",
        f"  burst {args.tasks} tasks, warm-up {args.warmup}, paced {args.paced}, relay batch {args.relay_batch}, "
        f"{os.cpu_count()} cores",
        "",
        "Throughput (burst: all tasks sent at once, until the last result)",
        f"  Handrail   {handrail.tasks_per_s:8.1f} tasks/s  {handrail.elapsed_s:6.2f} s  ({statuses})",
        f"  raw relay  {relay.tasks_per_s:8.1f} tasks/s  {relay.elapsed_s:6.2f} s",
        f"  ratio      {ratio:8.1%}           target >= {TARGET_RATIO:.0%}: {_verdict(ratio >= TARGET_RATIO)}",
        "",
        "CPU ms per task during the burst, by process (rest: Kafka, Redis, this bench, anything else running)",
        f"  Handrail   {_cpu_line(handrail)}",
        f"  raw relay  {_cpu_line(relay)}",
        "",
        "Work per task",
        f"  Handrail   {_work_line(handrail, args)}",
        f"  raw relay  {_work_line(relay, args)}",
        "",
        "Latency per hop, paced (one task in flight): ms between Kafka record timestamps (1 ms resolution)",
        f"  {'hop':<{width}}   Handrail p50   p95    p99 |  relay p50   p95    p99 | added p50  mean",
    ]
    h_paced, r_paced = handrail.hops("paced"), relay.hops("paced")
    added = [h.p50 - r.p50 for h, r in zip(h_paced, r_paced, strict=True)]
    for label, h, r, a in zip(labels, h_paced, r_paced, added, strict=True):
        lines.append(
            f"  {label:<{width}}   {h.p50:12.1f} {h.p95:5.1f} {h.p99:6.1f} | {r.p50:10.1f} {r.p95:5.1f} {r.p99:6.1f}"
            f" | {a:+9.1f} {h.mean - r.mean:+5.1f}"
        )
    worst = max(range(len(HOPS)), key=lambda i: added[i])
    lines += [
        f"  added p50 per hop: worst {added[worst]:+.1f} ms ({HOPS[worst]}), end to end / {len(HOPS)} = "
        f"{added[-1] / len(HOPS):+.2f} ms; target < {TARGET_ADDED_MS:g} ms: {_verdict(added[worst] < TARGET_ADDED_MS)}",
        "",
        "Latency per hop under the burst (queueing included), ms",
        f"  {'hop':<{width}}   Handrail p50    p99 |  relay p50    p99",
    ]
    for label, h, r in zip(labels, handrail.hops("burst"), relay.hops("burst"), strict=True):
        lines.append(f"  {label:<{width}}   {h.p50:12.1f} {h.p99:6.1f} | {r.p50:10.1f} {r.p99:6.1f}")
    off: Measurement | None = getattr(args, "handrail_off", None)
    if off is not None:
        lines += [
            "",
            "Observability: the same paced run with tracing + audit on (as above) and off; ms",
            f"  {'hop':<{width}}   on p50  off p50 | added p50",
        ]
        added_obs = []
        for label, on_hop, off_hop in zip(labels, h_paced, off.hops("paced"), strict=True):
            added_obs.append(on_hop.p50 - off_hop.p50)
            lines.append(f"  {label:<{width}}   {on_hop.p50:6.1f} {off_hop.p50:8.1f} | {added_obs[-1]:+9.1f}")
        per_hop = added_obs[-1] / len(HOPS)
        lines.append(
            f"  added per decision point (end to end / {len(HOPS)}): {per_hop:+.2f} ms; throughput on "
            f"{handrail.tasks_per_s:.1f} vs off {off.tasks_per_s:.1f} tasks/s; "
            f"target < 0.3 ms: {_verdict(per_hop < 0.3)}"
        )
        lines.append(f"  CPU ms per task during the burst, off: {_cpu_line(off)}")
    model: ModelRun | None = getattr(args, "handrail_model", None)
    if model is not None:
        m = model.measurement
        share = m.tasks_per_s / handrail.tasks_per_s
        lines += [
            "",
            f"Model latency: {model.latency_ms:g} ms per completion (OpenAI-compatible provider, local server"
            " replaying the plans), burst only",
            f"  Handrail   {m.tasks_per_s:8.1f} tasks/s  {m.elapsed_s:6.2f} s; CPU-bound (scripted, above) "
            f"{handrail.tasks_per_s:.1f} tasks/s: {share:.0%} (target >= 90%: {_verdict(share >= 0.9)})",
            f"  model calls {model.calls} in the burst (warm-up included in the peak): max {model.peak_in_flight} "
            f"in flight, mean {model.mean_in_flight:.1f} (target max >= 256: {_verdict(model.peak_in_flight >= 256)})",
            f"  CPU ms per task: {_cpu_line(m)}",
        ]
    sizes = ", ".join(f"{s} {n}" for s, n in zip(STAGES, handrail.mean_sizes(), strict=True))
    lines += ["", f"Mean message size, bytes (the relay pads to the same): {sizes}"]
    if handrail.statuses.get("completed", 0) != args.tasks:
        lines.append(f"WARNING: not every Handrail task completed: {statuses}")
    return "\n".join(lines)


# --- the command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/pipeline.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=500, help="tasks in the throughput burst (default 500)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up tasks before measuring (default 20)")
    parser.add_argument("--paced", type=int, default=100, help="tasks sent one at a time for latency (default 100)")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument(
        "--relay-batch", type=int, default=1, metavar="N",
        help="records a relay hop handles per poll (default 1: consume, publish, commit one by one, as Handrail does)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="run Handrail's services under cProfile, writing DIR/<service>.prof"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's topics, Redis keys and service logs")
    parser.add_argument(
        "--observability-off",
        action="store_true",
        help="also run Handrail with tracing and the audit trail off, and report what they add per hop",
    )
    parser.add_argument(
        "--model-latency-ms",
        type=float,
        metavar="N",
        help="also run Handrail with every agent on an OpenAI-compatible model that answers in N ms",
    )
    return parser


def _check_infra(bootstrap: str, redis_url: str) -> None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not tcp_open(host, int(port)):
        raise BenchError(f"Kafka is not reachable at {bootstrap}: start it with `make infra`")
    url = urlsplit(redis_url)
    if not tcp_open(url.hostname or "127.0.0.1", url.port or 6379):
        raise BenchError(f"Redis is not reachable at {redis_url}: start it with `make infra`")


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["relay-hop"]:
        return _relay_hop_main(argv[1:])
    if argv[:1] == ["profile-service"]:
        return _profile_service_main(argv[1:])
    args = _parser().parse_args(argv)
    args.run_id = uuid.uuid4().hex[:8]
    signal.signal(signal.SIGTERM, _interrupt)  # stop the services on `kill` too, not only on Ctrl-C
    run_dir = Path(tempfile.mkdtemp(prefix=f"handrail-bench-{args.run_id}-"))
    started: list[services.ServiceProcess] = []
    ok = False
    try:
        _check_infra(args.bootstrap, args.redis_url)
        handrail, relay = run(args, run_dir, started)
        print(report(args, handrail, relay))
        ok = True
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (BenchError, HandrailError) as exc:  # HandrailError: a bad contract, a service that would not start
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not leave services running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _teardown(args, run_dir, started, keep_logs=args.keep or not ok)
    return 0


def _teardown(args: argparse.Namespace, run_dir: Path, started: list[services.ServiceProcess], keep_logs: bool) -> None:
    """Stop every process this run started, then delete its topics and Redis keys unless --keep."""
    try:
        stopped = services.down(started, run_dir)
    except ServiceStopError as exc:
        print(f"could not stop a service: {exc}", file=sys.stderr)
        stopped = []
    if stopped:
        print(f"stopped: {', '.join(stopped)}", file=sys.stderr)
    if not args.keep:
        prefixes = (
            f"bench{args.run_id}.",
            f"bench{args.run_id}off.",
            f"bench{args.run_id}model.",
            f"relay{args.run_id}.",
        )
        try:
            # Redis keys of both Handrail runs: bench<id>: and bench<id>off:
            asyncio.run(cleanup(args.bootstrap, args.redis_url, prefixes, f"bench{args.run_id}"))
        except Exception as exc:  # the report is what matters; say what was left behind
            print(f"cleanup incomplete (topics {', '.join(p + '*' for p in prefixes)}): {exc}", file=sys.stderr)
    if keep_logs:
        print(f"service logs: {run_dir / 'services'}", file=sys.stderr)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
