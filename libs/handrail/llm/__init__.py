"""Model providers behind one interface.

Only the built-in ``scripted`` provider exists so far: it follows an agent's
declared plan, deterministically, and says so (``provider="scripted"``).
"""

from handrail.llm.base import ChatMessage, ModelProvider, ModelReply, ModelRequest, ToolCall
from handrail.llm.scripted import ScriptedProvider

__all__ = ["ChatMessage", "ModelProvider", "ModelReply", "ModelRequest", "ScriptedProvider", "ToolCall"]
