"""Building an agent's model provider from its contract."""

from __future__ import annotations

from handrail.contracts import AgentSpec
from handrail.errors import ContractError
from handrail.llm.base import ModelProvider
from handrail.llm.scripted import ScriptedProvider


def build_provider(agent: AgentSpec) -> ModelProvider:
    """The provider that serves ``agent``'s model chain."""
    primary = agent.model_chain[0]
    if primary == "scripted":
        return ScriptedProvider(agent.plan)
    raise ContractError(
        f"agent {agent.name!r}: field 'model_chain': unknown model {primary!r}; available: ['scripted']"
    )
