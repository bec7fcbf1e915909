"""Helpers for the model tests: catalogue entries and providers pointed at the fake server."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr
from tests.fixtures.model_server import FakeModelServer

from handrail.llm.anthropic import AnthropicProvider
from handrail.llm.models import ModelSpec, Price
from handrail.llm.openai_compat import OpenAICompatProvider

#: What every test key looks like; tests assert it never leaks into messages or logs.
TEST_KEY = "sk-test-0123456789-secret"
#: Short enough to keep the suite quick, long enough for a loopback round trip.
TIMEOUT_S = 0.5


def spec_for(server: FakeModelServer, shape: str, name: str = "m1", **overrides: Any) -> ModelSpec:
    """A catalogue entry for ``name`` on the fake server, speaking ``shape``."""
    body: dict[str, Any] = {
        "name": name,
        "provider": shape,
        "base_url": f"{server.url}/v1" if shape == "openai" else server.url,
        "api_key_env": "TEST_MODEL_KEY",
        "timeout_s": TIMEOUT_S,
        "max_retries": 2,
        "price": Price(input_usd_per_1m=2.0, output_usd_per_1m=10.0),
        **overrides,
    }
    return ModelSpec.model_validate(body)


def provider_for(
    spec: ModelSpec, client: httpx.AsyncClient, key: str | None = TEST_KEY
) -> OpenAICompatProvider | AnthropicProvider:
    secret = SecretStr(key) if key is not None else None
    if spec.provider == "openai":
        return OpenAICompatProvider(spec, secret, client)
    return AnthropicProvider(spec, secret, client)
