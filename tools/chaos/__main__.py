"""``python -m tools.chaos`` (``make chaos``): the soak; exits non-zero when any promise was broken.

python -m tools.chaos --tasks 2000 --faults 30     # the default
python -m tools.chaos --tasks 300 --faults 8       # the short run `make test` includes
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from pathlib import Path

from bench import model_replay
from tools.chaos import verdict as judging
from tools.chaos.cluster import PROJECT_ROOT, Cluster
from tools.chaos.faults import Faults, ModelFaults
from tools.chaos.workload import Reviewers, Submitter

from handrail.signing import TrustStore, Verifier
from handrail_dev import signing_keys
from handrail_dev.process import tcp_open
from handrail_dev.settings import DevSettings

log = logging.getLogger("chaos")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks to submit (default 2000)")
    parser.add_argument("--rate", type=float, default=4.0, help="tasks per second (default 4)")
    parser.add_argument("--faults", type=int, default=30, help="faults to inject, every kind at least once if >= 7")
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed, to replay a run)")
    parser.add_argument("--base-port", type=int, default=29100, help="Kafka here, Redis +2, services +10")
    parser.add_argument("--run-dir", type=Path, default=PROJECT_ROOT / ".run" / "chaos")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0, help="wait this long for the last results")
    parser.add_argument("--model-latency-ms", type=float, default=20.0, help="each model answer takes this long")
    parser.add_argument(
        "--vendor-share", type=float, default=0.2, help="share of tasks on vendor-due-diligence (default 0.2)"
    )
    return parser


async def soak(args: argparse.Namespace, cluster: Cluster, faults: Faults) -> tuple[judging.Verdict, float]:
    rng = faults.rng
    submitter = Submitter(cluster, args.tasks, args.rate, rng, vendor_share=args.vendor_share)
    reviewers = Reviewers(cluster)
    stop_reviewing = asyncio.Event()
    reviewing = asyncio.create_task(reviewers.run(stop_reviewing))
    submitting = asyncio.create_task(submitter.run())
    window_s = args.tasks / args.rate
    plan = faults.plan(args.faults)
    # Random moments within the submission window; each fault runs to its end before the next one.
    moments = sorted(rng.uniform(0.05 * window_s, 0.95 * window_s) for _ in plan)
    started = time.monotonic()
    for kind, at_s in zip(plan, moments, strict=True):
        await asyncio.sleep(max(0.0, started + at_s - time.monotonic()))
        await faults.inject(kind)
    await submitting
    last = time.monotonic()
    log.info("all %d tasks submitted and %d faults injected; draining", args.tasks, len(faults.injected))
    wanted = set(submitter.submitted)
    deadline = last + args.drain_timeout_s
    # Everything promised must show up: a result for every task, a dead letter for every poison message
    # (which may still wait for a rebuild of the state when the last fault was a Redis loss).
    while time.monotonic() < deadline:
        results = await judging.results_by_task(cluster.bootstrap, cluster.topics)
        missing = wanted - set(results)
        unlettered = set(faults.poison_keys) - await judging.dead_lettered_keys(cluster.bootstrap, cluster.topics)
        if not missing and not unlettered:
            break
        log.info("waiting for %d results and %d dead letters", len(missing), len(unlettered))
        await asyncio.sleep(5.0)
    drain_s = time.monotonic() - last
    await asyncio.sleep(3.0)  # anything late would be a duplicate: give it the chance to show
    stop_reviewing.set()
    await reviewing
    assert cluster.contracts is not None
    limits = {name: workflow.limits for name, workflow in cluster.contracts.workflows.items()}
    # Every audit record must also be signed by a service that may have written it.
    verifier = Verifier(TrustStore.from_file(cluster.run_dir / signing_keys.FOLDER))
    found = await judging.judge(
        cluster.bootstrap, cluster.topics, sorted(wanted), limits, cluster.ledger, faults.poison_keys, verifier
    )
    log.info("reviews approved over HTTP: %d (failed calls: %d)", reviewers.approvals, reviewers.errors)
    return found, drain_s


def report(
    args: argparse.Namespace, seed: int, faults: Faults, found: judging.Verdict, drain_s: float, services_dir: Path
) -> str:
    kinds: dict[str, int] = {}
    for fault in faults.injected:
        kinds[fault.kind] = kinds.get(fault.kind, 0) + 1
    statuses = ", ".join(f"{status} {n}" for status, n in sorted(found.statuses.items()))
    lines = [
        f"chaos soak: {args.tasks} tasks at {args.rate:g}/s, seed {seed}",
        f"faults injected: {len(faults.injected)}, {len(kinds)} kinds: "
        + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())),
        *(f"  {f.at_s:7.1f}s  {f.kind:<18} {f.target} ({f.took_s:.1f}s)" for f in faults.injected),
        f"submitted:              {found.submitted}",
        f"exactly one result:     {found.exactly_one}  ({statuses})",
        f"lost:                   {len(found.lost)}",
        f"duplicate results:      {len(found.duplicate_results)}  (same-id republishes: {found.republished})",
        f"duplicate side effects: {len(found.duplicate_side_effects)}  (ledger entries: {found.side_effects})",
        f"broken audit chains:    {len(found.broken_chains)}  (of {found.chains_checked} verified)",
        f"overspent tasks:        {len(found.overspent)}",
        f"poison dead-lettered:   {found.poison_dead_lettered} of {found.poison_sent}",
        f"dead letters by type:   {dict(sorted(found.dead_letters.items()))}"
        f"  (same-id republishes: {found.dead_letters_republished})",
        f"drain after the last fault and submission: {drain_s:.1f}s",
    ]
    violations = found.violations + [f"fault not recovered from: {f}" for f in faults.failed]
    lines.append("VIOLATIONS: " + "; ".join(violations) if violations else "every promise held")
    for task_id, trail in found.trails.items():
        lines.append(f"where {task_id} stopped, by its audit trail ({len(trail)} records):")
        lines += [f"  {entry}" for entry in trail] or ["  (no records)"]
        lines.append("  and by the services' logs:")
        lines += [f"  {line}" for line in _logged(services_dir, task_id)] or ["  (no lines)"]
    return "\n".join(lines)


def _logged(services_dir: Path, task_id: str, most: int = 40) -> list[str]:
    """The services' log lines that name ``task_id`` (the last ``most``), in time order."""
    found: list[str] = []
    for path in sorted(services_dir.glob("*.log")):
        found += [f"{path.stem}: {line}" for line in path.read_text(errors="replace").splitlines() if task_id in line]
    found.sort(key=lambda line: line.split(": ", 1)[1][:23])
    return found[-most:]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.tasks < 1 or args.rate <= 0 or args.faults < 0:
        _parser().error("--tasks and --rate must be positive, --faults at least 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s chaos: %(message)s")
    # The broker going away is the point: its clients' complaints are not the soak's report.
    for name in ("aiokafka", "httpx"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    # The launcher's port layout (handrail_dev.ports), as `handrail dev up --base-port` uses it.
    dev = DevSettings.at_base_port(
        args.base_port,
        run_dir=args.run_dir / "infra",
        redis_persistence=False,  # correctness must not depend on it: a Redis kill loses everything
    )
    for port in (dev.ports.kafka, dev.ports.controller, dev.ports.redis):
        if tcp_open("127.0.0.1", port):
            _parser().error(f"port {port} is taken: pick another --base-port")
    cluster = Cluster(dev, args.run_dir / "stack")
    model = ModelFaults(rng=random.Random(seed))
    server = model_replay.start_server(PROJECT_ROOT / "config", args.model_latency_ms)
    server.responder = model.wrap(server.responder)  # type: ignore[arg-type]
    try:
        cluster.start(server)
        faults = Faults(cluster, model, random.Random(seed))
        found, drain_s = asyncio.run(soak(args, cluster, faults))
    finally:
        cluster.stop()
    print(report(args, seed, faults, found, drain_s, cluster.services_dir), flush=True)
    return 1 if found.violations or faults.failed else 0


if __name__ == "__main__":
    sys.exit(main())
