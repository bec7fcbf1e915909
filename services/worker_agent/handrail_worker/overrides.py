"""A forked task's overrides (``HandoffEnvelope.overrides``), as the worker applies them to one step.

The prompt: the named version of the agent's declared prompt instead of the active one. The model:
a model of the catalogue instead of the agent's chain, its provider built once per model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from handrail.contracts import AgentSpec
from handrail.llm import ModelProvider
from handrail.llm.chain import ModelChain, as_chain
from handrail.messages import HandoffEnvelope
from handrail.prompts import PromptLibrary, PromptTemplate, parse_ref

#: Builds the provider of one catalogue model for the agent (``handrail.llm.factory.build_provider``).
ProviderFactory = Callable[[str], ModelProvider]


class PromptSource(Protocol):
    """Where a step's prompt comes from: ``handrail.prompts.PromptStore`` (the active version), or a replay's
    pinned version (``handrail_worker.replay``)."""

    library: PromptLibrary

    async def resolve(self, ref: str, *, agent: str | None = None, task_id: str | None = None) -> PromptTemplate: ...


async def prompt_for(prompts: PromptSource, agent: AgentSpec, envelope: HandoffEnvelope) -> PromptTemplate:
    """The template the step renders: the override's version of the agent's prompt, else the active one
    (or the candidate of the agent's canary, for a task in its cohort)."""
    version = envelope.overrides.prompts.get(agent.name) if envelope.overrides is not None else None
    if version is None:
        return await prompts.resolve(agent.prompt, agent=agent.name, task_id=envelope.task_id)
    return prompts.library.load(parse_ref(agent.prompt)[0], version)


class ModelOverrides:
    """The chain a step calls: the agent's own, or a single overriding model's (built on first use)."""

    def __init__(self, agent: AgentSpec, own: ModelChain, factory: ProviderFactory | None) -> None:
        self.agent = agent
        self.own = own
        self.factory = factory
        self._built: dict[str, ModelChain] = {}

    def for_step(self, envelope: HandoffEnvelope) -> tuple[ModelChain, str]:
        """The chain and the model name the step's requests name."""
        model = envelope.overrides.models.get(self.agent.name) if envelope.overrides is not None else None
        if model is None or self.factory is None:
            return self.own, self.agent.model_chain[0]
        if model not in self._built:
            self._built[model] = as_chain(self.factory(model), model)
        return self._built[model], model
