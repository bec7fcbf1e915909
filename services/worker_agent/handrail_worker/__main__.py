"""``python -m handrail_worker --agent NAME`` (or ``HANDRAIL_AGENT``): run one agent's worker."""

from __future__ import annotations

import argparse

from handrail.service.main import run_service
from handrail_worker.app import create
from handrail_worker.settings import WorkerSettings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m handrail_worker", description="Run one agent's worker.")
    parser.add_argument("--agent", help="the agent to run (default: HANDRAIL_AGENT)")
    args = parser.parse_args()
    overrides = {"agent": args.agent} if args.agent else {}
    run_service(lambda: create(WorkerSettings(**overrides)))


if __name__ == "__main__":
    main()
