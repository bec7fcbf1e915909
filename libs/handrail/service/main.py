"""The entry point every service's ``__main__`` calls."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from faststream.asgi import AsgiFastStream
from pydantic import ValidationError

from handrail.errors import ContractError
from handrail.service.runtime import Runtime


def run_service(create: Callable[[], tuple[Runtime, AsgiFastStream]]) -> None:
    """Build the service and run it until SIGTERM/SIGINT; a bad contract exits 2 with its message."""
    try:
        runtime, app = create()
    except ContractError as exc:
        print(f"handrail: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValidationError as exc:
        problems = "; ".join(f"HANDRAIL_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        print(f"handrail: invalid settings: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    settings = runtime.settings
    asyncio.run(app.run(run_extra_options={"host": settings.http_host, "port": settings.http_port}))
