"""What every service shares: its settings base, its wiring, and its HTTP endpoints."""

from handrail.service.runtime import Runtime, asgi_app, build_runtime
from handrail.service.settings import ServiceSettings

__all__ = ["Runtime", "ServiceSettings", "asgi_app", "build_runtime"]
