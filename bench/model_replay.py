"""A model with latency for the pipeline benchmark: the demo agents' plans, served over HTTP.

Each agent gets a model of its own in a copy of ``config/`` (``bench-<agent>``, OpenAI-compatible,
pointed at a local server), so the workers run the real provider — httpx, retries, token
accounting — while the server answers every chat completion with the agent's scripted plan
after a fixed delay. The answers are exactly what the built-in ``scripted`` model gives, so the
only difference from the CPU-bound run is the wait: what it costs in throughput is what
concurrency fails to hide.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from handrail.contracts import load_contracts
from handrail.errors import StepFailed
from handrail.llm.base import ChatMessage, ModelRequest, ToolCall
from handrail.llm.scripted import ScriptedProvider
from handrail.tools import default_registry

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))  # the benchmark reuses the tests' model server

from tests.fixtures.model_server import FakeModelServer, Received, Reply  # noqa: E402

#: The API key variable the bench models read (the local server ignores its value).
KEY_ENV = "HANDRAIL_BENCH_MODEL_KEY"


def model_name(agent: str) -> str:
    return f"bench-{agent}"


def start_server(config_dir: Path, latency_ms: float) -> FakeModelServer:
    """A running server that answers ``bench-<agent>`` with that agent's plan, ``latency_ms`` late."""
    contracts = load_contracts(config_dir, default_registry().names())
    providers = {model_name(name): ScriptedProvider(list(spec.plan)) for name, spec in contracts.agents.items()}
    turns = {model_name(name): len(spec.plan) for name, spec in contracts.agents.items()}

    def respond(received: Received) -> Reply:
        request = _request(received)
        provider = providers[received.model]
        try:
            reply = provider.reply(request)
        except StepFailed:  # asked again after an answer the worker refused (a fault): the plan's last turn
            reply = provider.reply(_last_turn(request, turns[received.model]))
        tokens = {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens}
        if reply.tool_calls:
            call = reply.tool_calls[0]
            return Reply("tool_call", tool=call.name, arguments=call.arguments, **tokens)
        return Reply("text", text=json.dumps(reply.answer), **tokens)

    server = FakeModelServer()
    server.responder = respond
    server.latency_s = latency_ms / 1000
    server.keep_alive = True  # as a real model API: the workers' connection pool reuses connections
    return server.start()


def write_config(source: Path, target: Path, server_url: str) -> Path:
    """``source`` copied to ``target`` with every agent on its own model at ``server_url``."""
    shutil.copytree(source, target)
    agents = yaml.safe_load((target / "agents.yaml").read_text())
    catalogue = yaml.safe_load((target / "models.yaml").read_text())
    for name, agent in agents["agents"].items():
        agent["model_chain"] = [model_name(name)]
        catalogue["models"][model_name(name)] = {
            "provider": "openai",
            "base_url": f"{server_url}/v1",
            "api_key_env": KEY_ENV,
            "timeout_s": 60,
            "max_retries": 0,
            "max_output_tokens": 512,
            "price": {"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.60},
        }
    (target / "agents.yaml").write_text(yaml.safe_dump(agents))
    (target / "models.yaml").write_text(yaml.safe_dump(catalogue))
    return target


def _last_turn(request: ModelRequest, turns: int) -> ModelRequest:
    """``request`` cut back to before its ``turns``-th assistant message: the plan's last turn comes next."""
    kept: list[ChatMessage] = []
    seen = 0
    for message in request.messages:
        if message.role == "assistant":
            seen += 1
            if seen >= turns:
                break
        kept.append(message)
    return ModelRequest(model=request.model, messages=kept)


def _request(received: Received) -> ModelRequest:
    """The chat the worker sent, as the scripted model reads it (tool results named by their call)."""
    names: dict[str, str] = {}
    messages = []
    for m in received.body["messages"]:
        calls = tuple(
            ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
            for c in m.get("tool_calls") or ()
        )
        names.update({c.id: c.name for c in calls})
        call_id: Any = m.get("tool_call_id")
        messages.append(
            ChatMessage(
                role=m["role"],
                content=m.get("content") or "",
                tool_calls=calls,
                tool_call_id=call_id,
                name=names.get(call_id) if call_id else None,
            )
        )
    return ModelRequest(model=received.model, messages=messages)
