"""``python -m handrail_worker --agent NAME`` (or ``HANDRAIL_AGENT``): run one agent's worker."""

from __future__ import annotations

import argparse
from typing import Any

from handrail.service.main import run_service
from handrail_worker.app import create
from handrail_worker.settings import WorkerSettings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m handrail_worker", description="Run one agent's worker.")
    parser.add_argument("--agent", help="the agent to run (default: HANDRAIL_AGENT)")
    parser.add_argument(
        "--shadow", action="store_true", help="run the agent's shadow version beside it (agents.yaml `shadow`)"
    )
    args = parser.parse_args()
    overrides: dict[str, Any] = {"agent": args.agent} if args.agent else {}
    if args.shadow:
        overrides["shadow"] = True
    run_service(lambda: create(WorkerSettings(**overrides)))


if __name__ == "__main__":
    main()
