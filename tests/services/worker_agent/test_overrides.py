"""A forked task's overrides reach the model: the named prompt version and the named model, for that task only."""

from __future__ import annotations

import httpx
from pydantic import SecretStr
from tests.fixtures.model_server import FakeModelServer, answer
from tests.services.worker_agent.test_runner_models import (  # the runner tests' model server, runner and guard
    OpenGuard,
    agent,
    envelope,
    http_client,
    model_server,
    prompt_store,
)

from handrail.llm import ModelProvider
from handrail.llm.factory import build_provider
from handrail.llm.models import ModelCatalogue, ModelSpec, RetryDefaults
from handrail.messages import StepOverrides
from handrail.prompts import PromptStore
from handrail.tools import default_registry
from handrail_worker.runner import StepRunner

__all__ = ["http_client", "model_server", "prompt_store"]  # fixtures, used by name


def runner(server: FakeModelServer, client: httpx.AsyncClient, prompts: PromptStore) -> StepRunner:
    def spec(name: str) -> ModelSpec:
        return ModelSpec.model_validate(
            {"name": name, "provider": "openai", "base_url": f"{server.url}/v1", "api_key_env": "K", "timeout_s": 1}
        )

    catalogue = ModelCatalogue(
        models={"gpt-test": spec("gpt-test"), "gpt-other": spec("gpt-other")},
        retry=RetryDefaults(base_delay_s=0.01, max_delay_s=0.01),
        source="test",
    )
    keys = {"K": SecretStr("k")}
    own = agent()

    def provider(model: str) -> ModelProvider:
        return build_provider(
            own.model_copy(update={"model_chain": [model]}), catalogue, api_keys=keys, http_client=client
        )

    return StepRunner(
        own, build_provider(own, catalogue, api_keys=keys, http_client=client), default_registry(), prompts=prompts,
        override_models=provider,
    )  # fmt: skip


async def test_a_forked_step_uses_its_prompt_version_and_model_and_the_next_task_does_not(
    model_server: FakeModelServer, http_client: httpx.AsyncClient, prompt_store: PromptStore
) -> None:
    steps = runner(model_server, http_client, prompt_store)
    model_server.script("gpt-other", answer({"ok": True}))
    model_server.script("gpt-test", answer({"ok": True}))
    forked = envelope().model_copy(
        update={"overrides": StepOverrides(prompts={"expense-intake": "2"}, models={"expense-intake": "gpt-other"})}
    )
    outcome = await steps.run(forked, OpenGuard())
    request = model_server.requests()[-1]
    assert request.model == "gpt-other" and "Do this in order" in request.body["messages"][0]["content"]
    assert [(d.name, d.prompt) for d in outcome.decisions] == [("openai/gpt-other", "expense-intake@2")]

    plain = await steps.run(envelope(), OpenGuard())
    request = model_server.requests()[-1]
    assert request.model == "gpt-test" and "an agent of the finance platform" in request.body["messages"][0]["content"]
    assert [(d.name, d.prompt) for d in plain.decisions] == [("openai/gpt-test", "expense-intake@1")]
