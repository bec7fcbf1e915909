"""The review service serves its deployment's AsyncAPI document beside OpenAPI: no token, the same guards."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from handrail.asyncapi import document
from handrail.contracts import load_contracts
from handrail.tools import default_registry
from handrail.topics import Topics
from handrail_review.api import build_api

ROOT = Path(__file__).resolve().parents[3]


async def test_the_asyncapi_document_is_served_like_the_openapi_one() -> None:
    contracts = load_contracts(ROOT / "config", default_registry().names())
    served = document(contracts, Topics("acme."))
    # The document needs no desk: a stand-in with the reviewers' roles, which the OpenAPI document names.
    desk: Any = SimpleNamespace(directory=SimpleNamespace(roles={"manager"}))
    api = build_api(desk, asyncio.Event(), asyncapi=served)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://review") as http:
        response = await http.get("/api/asyncapi.json")
        openapi = await http.get("/api/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == served
    assert response.json()["components"]["parameters"]["prefix"]["default"] == "acme."
    for guard in ("x-frame-options", "x-content-type-options", "referrer-policy"):
        assert response.headers[guard] == openapi.headers[guard]
    assert "/api/asyncapi.json" in openapi.json()["info"]["description"]
