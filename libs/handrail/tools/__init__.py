"""Typed tools: a registry that checks every model-proposed call before it runs."""

from handrail.tools.kinds import ToolErrorKind, ToolHalted, ToolOutcomeUnknown, ToolStepFailed
from handrail.tools.observations import ObservationDenied, observation_data, observation_text
from handrail.tools.registry import (
    Tool,
    ToolCallError,
    ToolContext,
    ToolFailure,
    ToolRegistry,
    ToolSpec,
    default_registry,
)

__all__ = [
    "ObservationDenied",
    "Tool",
    "ToolCallError",
    "ToolContext",
    "ToolErrorKind",
    "ToolFailure",
    "ToolHalted",
    "ToolOutcomeUnknown",
    "ToolRegistry",
    "ToolSpec",
    "ToolStepFailed",
    "default_registry",
    "observation_data",
    "observation_text",
]
