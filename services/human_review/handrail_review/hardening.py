"""What every HTTP request and response of the review service goes through: a body bound and browser guards.

``BodyLimit`` answers 413 to a body over the limit before the endpoint reads it (a
declared ``Content-Length``), or as soon as the bytes received pass it (chunked), so a
request too large to record is refused before anything is recorded. ``SecurityHeaders``
puts the browser guards on every response; ``content_security_policy`` gives a page's
policy, allowing exactly its own inline script and style blocks by their hashes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)
_GUARDS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class BodyLimit:
    """413 for a request body over ``max_bytes``, before the app has it all."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _error(send, 400, "bad_request", "Content-Length is not a number")
                return
            if int(declared) > self.max_bytes:
                await _error(send, 413, "too_large", self._detail(int(declared)))
                return
        received = 0
        started = answered = False

        async def counted() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not answered:
                    # Answer now, and tell the app the client is gone: it stops reading, and anything it
                    # sends after this (its own error for the disconnect) is dropped below.
                    if not started:
                        await _error(send, 413, "too_large", self._detail(received))
                    answered = True
                if answered:
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not answered:
                raise
            # The app's complaint about the disconnect we made up: the client has its 413.

    def _detail(self, size: int) -> str:
        return f"the request body is {'at least ' if size else ''}{size} bytes; at most {self.max_bytes} are taken"


class SecurityHeaders:
    """``X-Frame-Options``, ``X-Content-Type-Options`` and ``Referrer-Policy`` on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in _GUARDS if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, guarded)


def content_security_policy(html: str) -> str:
    """Same-origin everything; of inline code, only the page's own ``<script>`` and ``<style>`` blocks."""
    allowed: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        allowed[kind].append(f"'sha256-{digest}'")
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {' '.join(allowed['script'])}".rstrip(),
            f"style-src 'self' {' '.join(allowed['style'])}".rstrip(),
            "img-src 'self' data:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


async def _error(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
