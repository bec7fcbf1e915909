"""Pipeline benchmark: Handrail's ``expense-approval`` workflow against a raw aiokafka relay.

Run on demand on the real broker (``make infra``, then ``make bench``); never in CI.
Both systems move every task over the same five hops, each hop consumer in its own
process, each output published idempotently with ``acks=all`` and the input's offset
committed only after that publish was acknowledged::

    tasks -> agent.expense-intake -> steps -> agent.expense-approver -> steps -> results
       router        worker intake     validator     worker approver    validator

Per system: a warm-up burst, a paced phase (one task in flight, for per-hop latency
without queueing), then a burst of ``--tasks`` (throughput). Afterwards every record
is read back with a group-less reader and each hop's latency is the difference of the
Kafka record timestamps of a task's consecutive messages (key = task id). The relay
pads its messages to Handrail's mean size at each stage. ``bench/README.md`` explains
how to read the report.

    BenchError    a phase could not finish (infra unreachable, results missing); the message says what to check
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import runpy
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from handrail.client import follow, open_reader
from handrail.contracts import load_contracts
from handrail.dev import services
from handrail.dev.errors import ServiceStartError
from handrail.dev.process import live_pid, tcp_open
from handrail.messages import TaskSubmitted
from handrail.tools import default_registry
from handrail.topics import Topics, TopicSpec, ensure_topics

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = "expense-approval"
#: The topic (without prefix) of each message of a task, in order; hop i goes from stage i to i + 1.
STAGES = ("tasks", "agent.expense-intake", "steps", "agent.expense-approver", "steps", "results")
HOPS = ("router", "worker intake", "validator", "worker approver", "validator end")
#: Claims that all complete (approved, manager, director, rejected): the demo's happy paths.
CLAIMS: tuple[dict[str, Any], ...] = (
    {"employee_id": "E100", "amount": 42.5, "currency": "EUR", "description": "team lunch"},
    {"employee_id": "E101", "amount": 1200, "currency": "USD", "description": "laptop"},
    {"employee_id": "E102", "amount": 8000, "currency": "GBP", "description": "team offsite"},
    {"employee_id": "E103", "amount": 90, "currency": "USD", "description": "taxi"},
)
#: The targets the report checks: Handrail keeps half the relay's throughput and adds under 1 ms a hop.
TARGET_RATIO = 0.5
TARGET_ADDED_MS = 1.0
#: A reader that sees nothing for this long has read everything already written.
_READ_IDLE_S = 1.5
#: What a relay process prints once its group gave it partitions.
READY_LINE = "relay hop ready"


class BenchError(Exception):
    """A phase could not finish (infra unreachable, results missing); the message says what to check."""


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
class Measurement:
    """What one system did: the burst's wall time, its results' statuses, and every task's trace."""

    name: str
    tasks: int
    elapsed_s: float
    statuses: Counter[str]
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
    """Submits tasks on a system's tasks topic and waits for their results."""

    def __init__(self, bootstrap: str, prefix: str, make_task: Callable[[str, int], bytes]) -> None:
        self.bootstrap = bootstrap
        self.tasks_topic, self.results_topic = prefix + STAGES[0], prefix + STAGES[-1]
        self.make_task = make_task
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
        self.results: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Driver:
        await self.producer.start()
        self.results = await open_reader(self.bootstrap, [self.results_topic], from_time_ms=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.results is not None:
            await self.results.stop()
        await self.producer.stop()

    async def burst(self, ids: list[str], timeout_s: float) -> tuple[float, Counter[str]]:
        """Send every task at once; return the seconds until the last result arrived, and the statuses."""
        started = time.perf_counter()
        waiting = asyncio.create_task(self._collect(set(ids), timeout_s))
        acks = [
            await self.producer.send(self.tasks_topic, self.make_task(t, i), key=t.encode()) for i, t in enumerate(ids)
        ]
        await asyncio.gather(*acks)
        statuses = await waiting
        return time.perf_counter() - started, statuses

    async def paced(self, ids: list[str], timeout_s: float) -> Counter[str]:
        """Send one task at a time, each after the previous one's result."""
        statuses: Counter[str] = Counter()
        for i, task_id in enumerate(ids):
            await self.producer.send_and_wait(self.tasks_topic, self.make_task(task_id, i), key=task_id.encode())
            statuses += await self._collect({task_id}, timeout_s)
        return statuses

    async def _collect(self, wanted: set[str], timeout_s: float) -> Counter[str]:
        assert self.results is not None, "use the driver as an async context manager"
        statuses: Counter[str] = Counter()
        pending = {w.encode() for w in wanted}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise BenchError(f"{len(pending)} of {len(wanted)} results missing after {timeout_s:g}s")
            batch = await self.results.getmany(timeout_ms=200)
            for record in (r for records in batch.values() for r in records):
                if record.key in pending:
                    pending.discard(record.key)
                    statuses[json.loads(record.value or b"{}").get("status", "relayed")] += 1
        return statuses


async def read_traces(bootstrap: str, prefix: str) -> dict[str, Trace]:
    """Every complete task trace under ``prefix``, read back from the start of each topic."""
    topics = list(dict.fromkeys(prefix + s for s in STAGES))
    reader = await open_reader(bootstrap, topics, from_time_ms=0)
    seen: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    try:
        async for record in follow(reader, idle_timeout_s=_READ_IDLE_S):
            key = (record.key or b"").decode()
            seen[key, record.topic.removeprefix(prefix)].append(
                (record.offset, record.timestamp, len(record.value or b""))
            )
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
    name: str, bootstrap: str, prefix: str, make_task: Callable[[str, int], bytes], args: argparse.Namespace
) -> Measurement:
    """Warm up, run the paced phase and the burst, then read every trace back."""
    timeout_s = 60.0 + args.tasks * 0.2  # generous: a cold 2-core machine with Kafka, Redis and four services
    async with Driver(bootstrap, prefix, make_task) as driver:
        print(f"  {name}: warm-up ({args.warmup} tasks)", flush=True)
        await driver.burst(task_ids("warm", args.run_id, args.warmup), timeout_s)
        print(f"  {name}: paced ({args.paced} tasks, one in flight)", flush=True)
        await driver.paced(task_ids("paced", args.run_id, args.paced), timeout_s=30.0)
        print(f"  {name}: burst ({args.tasks} tasks)", flush=True)
        elapsed_s, statuses = await driver.burst(task_ids("burst", args.run_id, args.tasks), timeout_s)
    return Measurement(name, args.tasks, elapsed_s, statuses, await read_traces(bootstrap, prefix))


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


def relay_plan(bootstrap: str, prefix: str, run_id: str, sizes: list[int], batch: int) -> list[services.ServiceProcess]:
    """One relay process per consumed topic, routing each stage to the next like Handrail's services do."""
    plan = []
    for source in dict.fromkeys(STAGES[:-1]):
        routes = {i + 1: (prefix + STAGES[i + 1], sizes[i + 1]) for i, s in enumerate(STAGES[:-1]) if s == source}
        name = f"relay-{source.removeprefix('agent.')}"
        argv = (
            sys.executable,
            str(Path(__file__).resolve()),
            "relay-hop",
            "--bootstrap",
            bootstrap,
            "--group",
            f"bench-{run_id}-{name}",
            "--source",
            prefix + source,
            "--routes",
            json.dumps(routes),
            "--batch",
            str(batch),
            "--name",
            f"{name}-{run_id}",
        )
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
    """Router, validator and one worker per agent, on free ports, in consumer groups of their own.

    With ``profile_dir``, each runs under cProfile and writes ``<profile_dir>/<name>.prof`` when stopped.
    """
    plan = []
    for p in services.plan(agents, base_port=0):
        # Groups of their own: a bench must not rebalance (or be rebalanced by) a dev stack or a test run.
        env = {"HANDRAIL_CONSUMER_GROUP": f"bench-{run_id}-{p.name}"} if p.name in ("router", "validator") else {}
        argv = p.argv
        if (
            profile_dir is not None
        ):  # (python, -m, module, args...) -> (python, bench, profile-service, out, module, args...)
            argv = (
                argv[0],
                str(Path(__file__).resolve()),
                "profile-service",
                str(profile_dir / f"{p.name}.prof"),
                *argv[2:],
            )
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


def run(args: argparse.Namespace, run_dir: Path, started: list[services.ServiceProcess]) -> tuple[Measurement, ...]:
    """Measure Handrail, then the relay; every process started is appended to ``started`` first."""
    agents = sorted(load_contracts(PROJECT_ROOT / "config", default_registry().names()).agents)
    handrail_prefix, relay_prefix = f"bench{args.run_id}.", f"relay{args.run_id}."
    relay_specs = [TopicSpec(relay_prefix + s) for s in dict.fromkeys(STAGES)]
    asyncio.run(ensure_topics(args.bootstrap, Topics(handrail_prefix).specs(agents) + relay_specs))

    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    plan = handrail_plan(agents, args.run_id, args.profile)
    started += plan
    env = {
        "HANDRAIL_KAFKA_BOOTSTRAP": args.bootstrap,
        "HANDRAIL_REDIS_URL": args.redis_url,
        "HANDRAIL_TOPIC_PREFIX": handrail_prefix,
        "HANDRAIL_REDIS_PREFIX": f"bench{args.run_id}:",
        "HANDRAIL_CONFIG_DIR": str(PROJECT_ROOT / "config"),
    }
    print(f"starting Handrail: {', '.join(p.name for p in plan)}", flush=True)
    services.up(plan, run_dir, env, PROJECT_ROOT)
    handrail = asyncio.run(measure("Handrail", args.bootstrap, handrail_prefix, handrail_task, args))
    services.down(plan, run_dir)  # idle consumers still poll: keep the relay's CPU to itself
    if args.profile is not None:
        print(f"profiles: {args.profile}/<service>.prof (python -m pstats; sort tottime; stats 25)", flush=True)

    sizes = handrail.mean_sizes()
    relay_processes = relay_plan(args.bootstrap, relay_prefix, args.run_id, sizes, args.relay_batch)
    started += relay_processes
    print(f"starting the relay: {', '.join(p.name for p in relay_processes)}", flush=True)
    for process in relay_processes:
        services.start(process, run_dir, {}, PROJECT_ROOT)
    for process in relay_processes:
        _wait_logged(process, run_dir, READY_LINE, timeout_s=60.0)

    def relay_task(task_id: str, index: int) -> bytes:
        return relay_message(task_id, 0, sizes[0])

    relay = asyncio.run(measure("raw relay", args.bootstrap, relay_prefix, relay_task, args))
    services.down(relay_processes, run_dir)
    return handrail, relay


def _wait_logged(process: services.ServiceProcess, run_dir: Path, line: str, timeout_s: float) -> None:
    pid_path, log_path = process.paths(run_dir)
    deadline = time.monotonic() + timeout_s
    while line not in log_path.read_text(errors="replace"):
        if live_pid(pid_path, process.argv[-1]) is None or time.monotonic() > deadline:
            raise BenchError(f"{process.name} did not start; see {log_path}")
        time.sleep(0.1)


async def cleanup(bootstrap: str, redis_url: str, topic_prefixes: tuple[str, ...], redis_prefix: str) -> None:
    """Delete the run's topics and Redis keys (finished tasks would otherwise linger for a week)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
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


def _triple(s: Spread) -> str:
    return f"{s.p50:5.1f} {s.p95:5.1f} {s.p99:6.1f}"


def report(args: argparse.Namespace, handrail: Measurement, relay: Measurement) -> str:
    """The compact, printable comparison."""
    ratio = handrail.tasks_per_s / relay.tasks_per_s
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(handrail.statuses.items()))
    lines = [
        "",
        f"Handrail pipeline benchmark - {WORKFLOW}, {len(HOPS)} hops, Kafka {args.bootstrap}, run {args.run_id}",
        f"  burst {args.tasks} tasks, warm-up {args.warmup}, paced {args.paced}, relay batch {args.relay_batch}",
        "",
        "Throughput (burst: all tasks sent at once, until the last result)",
        f"  Handrail   {handrail.tasks_per_s:8.1f} tasks/s  {handrail.elapsed_s:6.2f} s  ({statuses})",
        f"  raw relay  {relay.tasks_per_s:8.1f} tasks/s  {relay.elapsed_s:6.2f} s",
        f"  ratio      {ratio:8.1%}           target >= {TARGET_RATIO:.0%}: {_verdict(ratio >= TARGET_RATIO)}",
        "",
        "Latency per hop, paced (one task in flight); ms between Kafka record timestamps (1 ms resolution)",
        f"  {'hop':<44} {'Handrail p50   p95    p99':>24} | {'relay p50   p95    p99':>21} | added p50  mean",
    ]
    h_paced, r_paced = handrail.hops("paced"), relay.hops("paced")
    added = [h.p50 - r.p50 for h, r in zip(h_paced, r_paced, strict=True)]
    labels = [f"{i + 1} {HOPS[i]:<15} {STAGES[i]} -> {STAGES[i + 1]}" for i in range(len(HOPS))]
    for label, h, r, a in zip([*labels, "end to end"], h_paced, r_paced, added, strict=True):
        lines.append(f"  {label:<44} {_triple(h):>24} | {_triple(r):>21} | {a:+9.1f} {h.mean - r.mean:+5.1f}")
    worst = max(range(len(HOPS)), key=lambda i: added[i])
    per_hop = added[-1] / len(HOPS)
    lines += [
        f"  added p50 per hop: worst {added[worst]:+.1f} ms ({HOPS[worst]}), "
        f"end to end / {len(HOPS)} = {per_hop:+.2f} ms;  "
        f"target < {TARGET_ADDED_MS:g} ms: {_verdict(added[worst] < TARGET_ADDED_MS)}",
        "",
        "Latency per hop under the burst (queueing included), ms p50 / p99",
    ]
    h_burst, r_burst = handrail.hops("burst"), relay.hops("burst")
    for label, h, r in zip([*labels, "end to end"], h_burst, r_burst, strict=True):
        lines.append(f"  {label:<44} Handrail {h.p50:7.1f} {h.p99:7.1f} | relay {r.p50:7.1f} {r.p99:7.1f}")
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
        "--relay-batch",
        type=int,
        default=1,
        help="records a relay hop handles per poll (default 1: consume, publish, commit one by one, as Handrail does)",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="run Handrail's services under cProfile, writing DIR/<service>.prof"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's topics, Redis keys and service logs")
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
    except (BenchError, ServiceStartError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not leave services running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _teardown(args, run_dir, started, keep_logs=args.keep or not ok)
    return 0


def _teardown(args: argparse.Namespace, run_dir: Path, started: list[services.ServiceProcess], keep_logs: bool) -> None:
    stopped = services.down(started, run_dir)
    if stopped:
        print(f"stopped: {', '.join(stopped)}", file=sys.stderr)
    if not args.keep:
        try:
            asyncio.run(
                cleanup(
                    args.bootstrap,
                    args.redis_url,
                    (f"bench{args.run_id}.", f"relay{args.run_id}."),
                    f"bench{args.run_id}:",
                )
            )
        except Exception as exc:  # the report is what matters; say what was left behind
            print(f"cleanup incomplete (topics bench{args.run_id}.*, relay{args.run_id}.*): {exc}", file=sys.stderr)
    if keep_logs:
        print(f"service logs: {run_dir / 'services'}", file=sys.stderr)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
