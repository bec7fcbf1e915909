"""The image's HEALTHCHECK: 0 when the service in this container answers ``/healthz`` with 200.

The port is ``HANDRAIL_HTTP_PORT`` when set, else each service's default port is
tried (only the one service of this container listens on any of them).
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULT_PORTS = (8081, 8082, 8083, 8085, 8086)  # router, worker, validator, circuit-breaker, human-review


def healthy(port: int, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> int:
    configured = os.environ.get("HANDRAIL_HTTP_PORT")
    ports = (int(configured),) if configured else DEFAULT_PORTS
    return 0 if any(healthy(port) for port in ports) else 1


if __name__ == "__main__":
    sys.exit(main())
