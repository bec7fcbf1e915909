"""Building an agent's model provider from its contract and the model catalogue.

An agent whose chain is just ``[scripted]`` gets the ``ScriptedProvider`` as it
always did. Any other chain becomes a ``ModelChain`` over the catalogue's
models, each with its provider, its key (read once, held as ``SecretStr``), its
retry policy and a per-model breaker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx
from pydantic import SecretStr

from handrail.contracts import AgentSpec
from handrail.contracts.agents import ScriptedAnswer, ScriptedCall
from handrail.errors import ContractError
from handrail.llm.anthropic import AnthropicProvider
from handrail.llm.base import ModelProvider
from handrail.llm.breaker import BreakerBoard, InMemoryBreakerBoard
from handrail.llm.chain import ChainLink, ModelChain
from handrail.llm.keys import read_api_keys
from handrail.llm.models import ModelCatalogue, ModelSpec, ProviderKind
from handrail.llm.observers import AttemptObserver
from handrail.llm.openai_compat import OpenAICompatProvider
from handrail.llm.scripted import ScriptedProvider
from handrail.llm.transport import model_http_client


def build_provider(
    agent: AgentSpec,
    catalogue: ModelCatalogue | None = None,
    *,
    breakers: BreakerBoard | None = None,
    observers: Sequence[AttemptObserver] = (),
    api_keys: Mapping[str, SecretStr] | None = None,
    http_client: httpx.AsyncClient | None = None,
    escalate_instead_of_fallback: bool | None = None,
) -> ModelProvider:
    """The provider that serves ``agent``'s model chain.

    ``api_keys`` (env var name -> key) defaults to reading the environment;
    ``escalate_instead_of_fallback`` defaults to the agent's ``on_model_failure``
    being ``escalate``.
    """
    if list(agent.model_chain) == ["scripted"]:
        return ScriptedProvider(agent.plan)
    if escalate_instead_of_fallback is None:
        # ``on_model_failure`` is the agent contract's switch for high-stakes steps; absent means fall back.
        escalate_instead_of_fallback = getattr(agent, "on_model_failure", "fallback") == "escalate"
    return build_chain(
        agent.model_chain,
        catalogue,
        user=f"agent {agent.name!r}",
        source="agents.yaml",
        plan=agent.plan,
        breakers=breakers,
        observers=observers,
        api_keys=api_keys,
        http_client=http_client,
        escalate_instead_of_fallback=escalate_instead_of_fallback,
    )


def build_chain(
    model_chain: Sequence[str],
    catalogue: ModelCatalogue | None = None,
    *,
    user: str,
    source: str,
    plan: Sequence[ScriptedCall | ScriptedAnswer] = (),
    breakers: BreakerBoard | None = None,
    observers: Sequence[AttemptObserver] = (),
    api_keys: Mapping[str, SecretStr] | None = None,
    http_client: httpx.AsyncClient | None = None,
    escalate_instead_of_fallback: bool = False,
) -> ModelChain:
    """A ``ModelChain`` over ``model_chain`` from the catalogue.

    ``user`` says who runs it (``agent 'x'``, ``classifier``) and ``source`` where that is declared, for errors.
    """
    catalogue = catalogue or ModelCatalogue()
    catalogue.check_chains({user: model_chain}, source)
    specs = [catalogue.get(name) for name in model_chain]
    if api_keys is None:
        api_keys = read_api_keys(s.api_key_env for s in specs if s.api_key_env)
    client = http_client or model_http_client()
    links = [
        ChainLink(spec.name, _provider(user, spec, catalogue, list(plan), api_keys, client), catalogue.retry_policy(n))
        for n, spec in zip(model_chain, specs, strict=True)
    ]
    return ModelChain(
        links,
        breakers=breakers or InMemoryBreakerBoard(catalogue.breaker.failure_threshold, catalogue.breaker.open_s),
        observers=observers,
        escalate_instead_of_fallback=escalate_instead_of_fallback,
    )


def _provider(
    user: str,
    spec: ModelSpec,
    catalogue: ModelCatalogue,
    plan: list[ScriptedCall | ScriptedAnswer],
    api_keys: Mapping[str, SecretStr],
    client: httpx.AsyncClient,
) -> ModelProvider:
    if spec.provider == ProviderKind.SCRIPTED:
        return ScriptedProvider(plan)
    key = None
    if spec.api_key_env:
        key = api_keys.get(spec.api_key_env)
        if key is None:
            raise ContractError(
                f"{catalogue.source}: model {spec.name!r}: field 'api_key_env': environment variable "
                f"{spec.api_key_env} is not set ({user} uses this model)"
            )
    if spec.provider == ProviderKind.OPENAI:
        return OpenAICompatProvider(spec, key, client)
    return AnthropicProvider(spec, key, client)
