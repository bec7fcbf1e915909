"""An agent's contract, as declared in ``config/agents.yaml``."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from handrail.contracts.mcp import McpServerSpec, with_mcp_tools


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Autonomy(StrEnum):
    """How much a person is in the loop."""

    APPROVAL_GATES = "approval-gates"
    EXCEPTION_BASED = "exception-based"
    AUDIT_BASED = "audit-based"


class Limits(_Strict):
    """Hard caps the platform enforces for this agent, whatever the model says."""

    max_turns: int = Field(default=8, ge=1, description="Model calls within one step.")
    max_steps: int = Field(default=10, ge=1, description="Steps per task.")
    max_tokens: int = Field(default=20_000, ge=0)
    max_output_tokens: int = Field(
        default=1024, ge=1, description="Per model call; reserved before the call, so a reply can never overspend."
    )
    max_cost_usd: float = Field(default=1.0, ge=0)
    deadline_s: float = Field(default=300.0, gt=0)
    loop_window_s: float = Field(default=600.0, gt=0)
    loop_max_repeats: int = Field(default=3, ge=1)
    max_tool_corrections: int = Field(default=2, ge=0, description="Rejected tool calls before the step fails.")


class ScriptedCall(_Strict):
    """One scripted turn that calls a tool; strings ``${path}`` are filled from the scope."""

    call: str
    args: dict[str, Any] = Field(default_factory=dict)


class ScriptedAnswer(_Strict):
    """The scripted turn that ends the step with an output."""

    answer: dict[str, Any]
    confidence: float = Field(default=1.0, ge=0, le=1)


class AgentSpec(_Strict):
    """One agent: who owns it, what it may do, and within which limits."""

    name: str
    owner: str
    purpose: str
    model_chain: list[str] = Field(min_length=1, description="Primary model first, then fallbacks.")
    prompt: str = Field(description="Prompt name@version.")
    tools: list[str] = Field(
        default_factory=list,
        description="Allowed tools; anything else is denied. Each MCP server's `allow` joins them as <server>__<tool>.",
    )
    mcp_servers: list[McpServerSpec] = Field(default_factory=list, description="MCP servers it takes tools from.")
    limits: Limits = Field(default_factory=Limits)
    autonomy: Autonomy = Autonomy.EXCEPTION_BASED
    confidence_floor: float = Field(default=0.0, ge=0, le=1)
    risk_class: str = "limited"
    plan: list[ScriptedCall | ScriptedAnswer] = Field(
        default_factory=list, description="What the built-in `scripted` model does, turn by turn."
    )

    @model_validator(mode="before")
    @classmethod
    def _mcp_tools(cls, data: Any) -> Any:
        return with_mcp_tools(data)

    @model_validator(mode="after")
    def _mcp_server_names_differ(self) -> AgentSpec:
        names = [server.name for server in self.mcp_servers]
        if len(set(names)) != len(names):
            raise ValueError(f"`mcp_servers` names a server twice: {sorted(names)}")
        return self

    @model_validator(mode="after")
    def _plan_ends_with_an_answer(self) -> AgentSpec:
        if "scripted" in self.model_chain and (not self.plan or not isinstance(self.plan[-1], ScriptedAnswer)):
            raise ValueError("a scripted agent needs a `plan` whose last turn is an `answer`")
        return self
