"""The review service's HTTP guards, on a bare ASGI app: body bounds before the endpoint, browser headers, CSP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from handrail_review.hardening import BodyLimit, SecurityHeaders, content_security_policy

LIMIT = 1000
seen: list[int] = []


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    seen.append(len(body))
    return JSONResponse({"bytes": len(body)})


def client() -> httpx.AsyncClient:
    app = SecurityHeaders(BodyLimit(Starlette(routes=[Route("/", echo, methods=["POST"])]), max_bytes=LIMIT))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://review")


async def test_a_declared_body_over_the_limit_is_refused_before_the_endpoint_sees_it() -> None:
    seen.clear()
    async with client() as http:
        assert (await http.post("/", content=b"x" * LIMIT)).json() == {"bytes": LIMIT}
        over = await http.post("/", content=b"x" * (LIMIT + 1))
    assert over.status_code == 413 and over.json()["error"] == "too_large"
    assert seen == [LIMIT], "the endpoint never ran for the large one"


async def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 400

    seen.clear()
    async with client() as http:
        response = await http.post("/", content=chunks())
    assert response.status_code == 413 and "at most 1000" in response.json()["detail"]
    assert seen == []


async def test_every_response_carries_the_browser_guards() -> None:
    async with client() as http:
        response = await http.post("/", content=b"{}")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_policy_allows_exactly_the_pages_own_inline_blocks() -> None:
    policy = content_security_policy("<style>p{}</style><script>go()</script><script>more()</script>")
    script = next(part for part in policy.split("; ") if part.startswith("script-src"))
    assert script.count("'sha256-") == 2 and "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
