"""Typed tools: a registry that checks every model-proposed call before it runs."""

from handrail.tools.registry import (
    Tool,
    ToolCallError,
    ToolContext,
    ToolFailure,
    ToolRegistry,
    ToolSpec,
    default_registry,
)

__all__ = ["Tool", "ToolCallError", "ToolContext", "ToolFailure", "ToolRegistry", "ToolSpec", "default_registry"]
