"""python -m tools.compose_test [--keep] [--no-build]: see the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from tools.compose_test import ComposeTestFailed
from tools.compose_test.checks import Target, check
from tools.compose_test.engine import Engine
from tools.compose_test.stack import Stack, external_bootstrap, published_ports

PROJECT_DIR = Path(__file__).resolve().parents[2]
#: The registry images of the core and their stand-ins (tools/container/build-standins.sh).
STAND_INS = {"kafka": "localhost/handrail-kafka:{tag}", "redis": "localhost/handrail-redis:7"}
# Kafka, then the one-shot jobs, then six services, on two cores.
_UP_TIMEOUT_S = 300.0

_started = time.monotonic()


def say(text: str) -> None:
    print(f"[compose-test {time.monotonic() - _started:4.0f} s] {text}", flush=True)


def _script(name: str, *args: str) -> None:
    out = subprocess.run([str(PROJECT_DIR / "tools" / "container" / name), *args], check=False)  # noqa: S603
    if out.returncode != 0:
        raise ComposeTestFailed(f"tools/container/{name} failed (exit {out.returncode})")


def stand_ins(engine: Engine, services: dict[str, Any], build: bool) -> dict[str, dict[str, str]]:
    """The core's registry images that cannot be pulled, each replaced by its local stand-in."""
    missing = {n: services[n]["image"] for n in STAND_INS if not engine.image_available(services[n]["image"])}
    if not missing:
        return {}
    say(f"cannot pull {', '.join(missing.values())}: using local stand-ins")
    if build:
        _script("build-standins.sh", engine.name, sys.executable)
    return {n: {"image": STAND_INS[n].format(tag=image.rsplit(":", 1)[-1])} for n, image in missing.items()}


def manager_token(stack: Stack) -> tuple[str, str]:
    """A manager of reviewers.yaml and the token the stack's reviewer-tokens job printed for them."""
    declared = yaml.safe_load((PROJECT_DIR / "config" / "reviewers.yaml").read_text())["reviewers"]
    manager = next(r for r, spec in declared.items() if "manager" in spec.get("roles", []))
    printed = stack.engine.logs(stack.container("reviewer-tokens"), lines=len(declared) + 5)
    tokens = dict(line.split() for line in printed.splitlines() if len(line.split()) == 2)
    if manager not in tokens:
        raise ComposeTestFailed(f"the reviewer-tokens job printed no token for {manager}:\n{printed}")
    return manager, tokens[manager]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compose_test", description=__doc__)
    parser.add_argument("--project", default="handrail-compose-test", help="the compose project name")
    parser.add_argument("--no-build", action="store_true", help="use the images already built")
    parser.add_argument("--keep", action="store_true", help="leave the stack running (tear down with --down)")
    parser.add_argument("--down", action="store_true", help="only tear down a stack left running")
    args = parser.parse_args()

    run_dir = PROJECT_DIR / ".run" / "compose-test"
    run_dir.mkdir(parents=True, exist_ok=True)
    compose_file = PROJECT_DIR / "docker-compose.yml"
    stack: Stack | None = None
    try:
        engine = Engine.detect(PROJECT_DIR)
        say(f"engine: {engine.name}")
        if not args.no_build and not args.down:
            _script("build-image.sh")
        services = yaml.safe_load(compose_file.read_text())["services"]
        override: dict[str, Any] = {"services": {} if args.down else stand_ins(engine, services, not args.no_build)}
        stack = Stack(engine, args.project, compose_file, override, run_dir)
        stack.down()  # whatever a killed run left
        if args.down:
            return 0
        if taken := stack.ports_in_use():
            raise ComposeTestFailed(f"ports {taken} are in use on this host: stop what listens there first")
        stack.up(_UP_TIMEOUT_S, say)
        say(f"healthy: {', '.join(stack.services)}")
        review = services["human-review"]
        manager, token = manager_token(stack)
        target = Target(
            bootstrap=external_bootstrap(services["kafka"]),
            review_url=f"http://127.0.0.1:{published_ports(review)[0]}",
            manager=manager,
            manager_token=token,
        )
        asyncio.run(check(target, say))
    except ComposeTestFailed as exc:
        say(f"FAILED: {exc}")
        return 1
    finally:
        if stack is not None and not args.keep:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short
            stack.down()
            say("torn down")
    say("passed")
    return 0


def _stop(signum: int, _frame: object) -> None:
    """A SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C: the stack is torn down on the way out."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    os.chdir(PROJECT_DIR)
    signal.signal(signal.SIGTERM, _stop)
    sys.exit(main())
