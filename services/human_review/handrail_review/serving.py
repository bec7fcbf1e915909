"""Serving the reviewers' API next to ``/healthz`` and ``/metrics`` on the service's one port."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream
from starlette.types import ASGIApp, Receive, Scope, Send


class _WithApi(AsgiFastStream):
    """FastStream's ASGI app matches exact paths only; every other HTTP request goes to the API."""

    api: ASGIApp | None = None

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.api is not None:
            await self.api(scope, receive, send)
            return
        await super().not_found(scope, receive, send)


def serve_with(base: AsgiFastStream, api: ASGIApp) -> AsgiFastStream:
    """``base`` (its broker, hooks and routes) with ``api`` behind it."""
    app = _WithApi.from_app(base, base.routes)
    app.api = api
    return app
