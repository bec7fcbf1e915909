"""One HTTP POST to a model API, with every transport failure turned into a ``ModelError``.

Both providers send their requests through ``post_json``: a hard deadline of
the model's ``timeout_s`` around the whole exchange (httpx's own timeouts are
per phase), status codes mapped to retryable or not, and the API key added to
the headers here and nowhere else, so it never reaches a message or a log.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from httpx_aiohttp import HttpxAiohttpClient
from pydantic import SecretStr

from handrail.llm.errors import (
    ModelConnectionError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelResponseInvalid,
    ModelServerError,
    ModelTimeout,
)
from handrail.llm.models import ModelSpec
from handrail.llm.retry import parse_retry_after

#: Statuses that say "not now" rather than "never": 408 timeout, 409 conflict, 529 Anthropic overloaded.
_TRANSIENT_4XX = {408, 409, 529}
#: How much of an error body to quote; enough for the provider's message, not a whole HTML page.
_ERROR_EXCERPT_CHARS = 300


def auth_headers(spec: ModelSpec, api_key: SecretStr | None) -> dict[str, str]:
    """The header that carries ``api_key`` the way ``spec`` says (none without a key)."""
    if api_key is None:
        return {}
    if spec.api_key_header.lower() == "authorization":
        return {"authorization": f"Bearer {api_key.get_secret_value()}"}
    return {spec.api_key_header: api_key.get_secret_value()}


async def post_json(
    client: httpx.AsyncClient,
    spec: ModelSpec,
    provider: str,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> dict[str, Any]:
    """POST ``body`` and return the JSON response, or raise the ``ModelError`` that fits."""
    model = spec.name
    try:
        async with asyncio.timeout(spec.timeout_s):
            response = await client.post(
                url, json=body, headers=headers, params=spec.query_params or None, timeout=spec.timeout_s
            )
    except (TimeoutError, httpx.TimeoutException):
        raise ModelTimeout(f"no response within {spec.timeout_s:g}s", model=model, provider=provider) from None
    except httpx.TransportError as exc:
        raise ModelConnectionError(
            f"{type(exc).__name__} talking to {_origin(url)}", model=model, provider=provider
        ) from None
    status = response.status_code
    if status == 429:
        retry_after_s = parse_retry_after({k.lower(): v for k, v in response.headers.items()})
        raise ModelRateLimited(
            f"rate limited (429){_excerpt(response)}", model=model, provider=provider, retry_after_s=retry_after_s
        )
    if status >= 500 or status in _TRANSIENT_4XX:
        raise ModelServerError(f"HTTP {status}{_excerpt(response)}", model=model, provider=provider, status=status)
    if status >= 400:
        raise ModelRequestRejected(f"HTTP {status}{_excerpt(response)}", model=model, provider=provider, status=status)
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelResponseInvalid(
            f"HTTP {status} with a body that is not JSON", model=model, provider=provider
        ) from None
    if not isinstance(payload, dict):
        raise ModelResponseInvalid(
            f"HTTP {status} with a JSON body that is not an object", model=model, provider=provider
        )
    return payload


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}:{parsed.port or ''}".rstrip(":")


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return f": {text[:_ERROR_EXCERPT_CHARS]}" if text else ""


#: Connections one process may hold open to model APIs. A worker runs up to its max in-flight
#: steps at once, each with a call in flight; httpx's default pool (100) would quietly cap that.
MAX_MODEL_CONNECTIONS = 2048


def model_http_client() -> httpx.AsyncClient:
    """The HTTP client a process's model providers share: a pool sized for many calls in flight.

    httpx's API on aiohttp's connection pool (``httpx-aiohttp``, as the OpenAI SDK offers it):
    httpcore's pool walks every connection on each request, so with hundreds in flight it spent
    most of a worker's CPU on bookkeeping; aiohttp's does not.
    """
    return HttpxAiohttpClient(limits=httpx.Limits(max_connections=MAX_MODEL_CONNECTIONS, max_keepalive_connections=256))


class HttpProvider:
    """What every HTTP provider shares: its model spec, its endpoint, its key and its client.

    Subclasses set ``name`` and ``path`` (appended to the model's ``base_url``) and implement ``complete``.
    """

    name: str
    path: str

    def __init__(self, spec: ModelSpec, api_key: SecretStr | None, client: httpx.AsyncClient | None = None) -> None:
        assert spec.base_url is not None  # the catalogue requires it for HTTP kinds
        self.spec = spec
        self._url = spec.base_url.rstrip("/") + self.path
        self._api_key = api_key
        self._client = client or model_http_client()

    def __repr__(self) -> str:
        # Never the key: a provider's repr ends up in logs.
        return f"{type(self).__name__}(model={self.spec.name!r}, url={self._url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
