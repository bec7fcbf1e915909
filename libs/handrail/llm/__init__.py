"""Model providers behind one interface.

- ``scripted``: the built-in provider that follows an agent's declared plan,
  deterministically, and says so (``provider="scripted"``);
- ``openai``: any OpenAI-compatible chat completions endpoint (OpenAI, Azure-style
  gateways, vLLM, Ollama, LiteLLM proxies);
- ``anthropic``: the Anthropic Messages API.

``ModelChain`` runs an agent's models in order with retries, breakers and
failover; ``build_provider`` builds it from the agent and ``config/models.yaml``.
"""

from handrail.llm.base import Attempt, ChatMessage, ModelProvider, ModelReply, ModelRequest, ToolCall
from handrail.llm.scripted import ScriptedProvider

__all__ = [
    "Attempt",
    "ChatMessage",
    "ModelProvider",
    "ModelReply",
    "ModelRequest",
    "ScriptedProvider",
    "ToolCall",
]
