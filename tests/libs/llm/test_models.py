"""The model catalogue (config/models.yaml), the API keys, and building an agent's provider from them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr
from tests.fixtures.model_server import FakeModelServer, answer, status
from tests.libs.llm.support import TEST_KEY

from handrail.contracts import AgentSpec, load_contracts
from handrail.errors import ContractError
from handrail.llm import ChatMessage, ModelRequest, ScriptedProvider
from handrail.llm.chain import ModelChain
from handrail.llm.factory import build_chain, build_provider
from handrail.llm.keys import read_api_keys
from handrail.llm.models import ModelCatalogue, load_catalogue
from handrail.tools import default_registry

PROJECT_CONFIG = Path(__file__).resolve().parents[3] / "config"


def write_catalogue(tmp_path: Path, body: dict[str, Any]) -> Path:
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(body))
    return tmp_path


def agent(chain: list[str], **extra: Any) -> AgentSpec:
    plan = [{"answer": {"ok": True}}] if "scripted" in chain else []
    body = {"name": "a", "owner": "o", "purpose": "p", "model_chain": chain, "prompt": "p@1", "plan": plan}
    return AgentSpec.model_validate({**body, **extra})


def test_the_shipped_catalogue_loads_and_knows_scripted() -> None:
    catalogue = load_catalogue(PROJECT_CONFIG)
    assert {"scripted", "gpt-4o-mini", "claude-haiku"} <= set(catalogue.models)
    gpt = catalogue.get("gpt-4o-mini")
    assert gpt.api_key_env == "OPENAI_API_KEY" and gpt.price.cost_usd(1_000_000, 0) == pytest.approx(0.15)
    assert catalogue.retry_policy("gpt-4o-mini").max_attempts == gpt.max_retries + 1


def test_without_a_catalogue_only_scripted_exists(tmp_path: Path) -> None:
    assert list(load_catalogue(tmp_path).models) == ["scripted"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"models": {"x": {"provider": "openai"}}}, "model 'x': field '(entry)': Value error, field 'base_url'"),
        (
            {"models": {"x": {"provider": "openai", "base_url": "ftp://h"}}},
            "model 'x': field 'base_url': String should match pattern",
        ),
        (
            {"models": {"x": {"provider": "openai", "base_url": "http://h", "timeout_s": -1}}},
            "model 'x': field 'timeout_s'",
        ),
        (
            {"models": {"x": {"provider": "openai", "base_url": "http://h", "api_key": "sk-oops"}}},
            "model 'x': field 'api_key': Extra inputs are not permitted",
        ),
        ({"models": {"x": {"provider": "gemini"}}}, "model 'x': field 'provider'"),
        ({"models": {"scripted": {"provider": "openai", "base_url": "http://h"}}}, "model 'scripted'"),
        ({"models": {}, "retries": {}}, "unknown top-level keys ['retries']"),
        ({"models": {}, "breaker": {"failure_threshold": 0}}, "field 'breaker.failure_threshold'"),
    ],
)
def test_a_bad_catalogue_names_the_file_the_model_and_the_field(
    tmp_path: Path, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ContractError) as caught:
        load_catalogue(write_catalogue(tmp_path, body))
    assert str(tmp_path / "models.yaml") in str(caught.value)
    assert message in str(caught.value)


def test_a_chain_naming_an_unknown_model_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match=r"agent 'a': field 'model_chain.1': unknown model 'gpt-9'"):
        load_catalogue(PROJECT_CONFIG).check_chains({"agent 'a'": ["gpt-4o-mini", "gpt-9"]})


def test_keys_are_read_from_the_environment_as_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MODEL_KEY", TEST_KEY)
    monkeypatch.setenv("JSON", "k2")  # a name that is also a pydantic model method
    monkeypatch.delenv("TEST_MISSING_KEY", raising=False)
    keys = read_api_keys(["TEST_MODEL_KEY", "TEST_MISSING_KEY", "JSON"])
    assert sorted(keys) == ["JSON", "TEST_MODEL_KEY"] and keys["JSON"].get_secret_value() == "k2"
    assert keys["TEST_MODEL_KEY"].get_secret_value() == TEST_KEY
    assert TEST_KEY not in repr(keys) and TEST_KEY not in str(keys)


def test_a_scripted_only_chain_is_the_scripted_provider_as_before() -> None:
    assert isinstance(build_provider(agent(["scripted"])), ScriptedProvider)


def test_a_missing_key_stops_the_build_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ContractError, match="environment variable OPENAI_API_KEY is not set"):
        build_provider(agent(["gpt-4o-mini"]), load_catalogue(PROJECT_CONFIG))


def test_an_unknown_model_without_a_catalogue_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="unknown model 'gpt-4o-mini'"):
        build_provider(agent(["gpt-4o-mini"]))


async def test_the_built_chain_serves_with_the_key_from_the_environment(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_MODEL_KEY", TEST_KEY)
    models = {
        "fast": {"provider": "openai", "base_url": f"{model_server.url}/v1", "api_key_env": "TEST_MODEL_KEY"},
        "careful": {"provider": "anthropic", "base_url": model_server.url, "api_key_env": "TEST_MODEL_KEY"},
    }
    body = {
        "retry": {"base_delay_s": 0.01, "max_delay_s": 0.01},
        "models": {n: {**m, "max_retries": 0} for n, m in models.items()},
    }
    catalogue = load_catalogue(write_catalogue(tmp_path, body))
    async with httpx.AsyncClient() as client:
        provider = build_provider(agent(["fast", "careful"]), catalogue, http_client=client)
        assert isinstance(provider, ModelChain) and provider.models == ["fast", "careful"]
        model_server.script("fast", status(503))
        model_server.script("careful", answer({"ok": True}))
        reply = await provider.complete(ModelRequest(model="x", messages=[ChatMessage("user", "{}")]))
    assert reply.answer == {"ok": True} and reply.provider == "anthropic"
    assert model_server.requests("fast")[0].headers["authorization"] == f"Bearer {TEST_KEY}"
    assert model_server.requests("careful")[0].headers["x-api-key"] == TEST_KEY
    assert TEST_KEY not in caplog.text and TEST_KEY not in repr(provider.links)


def test_escalation_follows_the_agent_switch() -> None:
    catalogue = ModelCatalogue()
    provider = build_provider(
        agent(["scripted", "scripted"]), catalogue, api_keys={}, escalate_instead_of_fallback=True
    )
    assert isinstance(provider, ModelChain) and provider.escalate_instead_of_fallback


def test_a_chain_for_the_classifier_names_its_source_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ContractError, match=r"^workflows.yaml: classifier: field 'model_chain.0': unknown model 'x'"):
        build_chain(["x"], load_catalogue(PROJECT_CONFIG), user="classifier", source="workflows.yaml")
    with pytest.raises(ContractError, match=r"OPENAI_API_KEY is not set \(classifier uses this model\)"):
        build_chain(["gpt-4o-mini"], load_catalogue(PROJECT_CONFIG), user="classifier", source="workflows.yaml")


def test_keys_passed_in_are_used_as_given(tmp_path: Path) -> None:
    body = {"models": {"x": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "X_KEY"}}}
    catalogue = load_catalogue(write_catalogue(tmp_path, body))
    provider = build_provider(agent(["x"]), catalogue, api_keys={"X_KEY": SecretStr("k")})
    assert isinstance(provider, ModelChain)


def test_the_shipped_config_dir_still_builds_the_demo_agents() -> None:
    contracts = load_contracts(PROJECT_CONFIG, default_registry().names())
    catalogue = load_catalogue(PROJECT_CONFIG)
    for spec in contracts.agents.values():
        catalogue.check_chains({f"agent {spec.name!r}": spec.model_chain})
        assert isinstance(build_provider(spec, catalogue), ScriptedProvider)
