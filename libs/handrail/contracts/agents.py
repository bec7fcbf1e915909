"""An agent's contract, as declared in ``config/agents.yaml``."""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from handrail.contracts.context import ContextBudget
from handrail.contracts.mcp import McpServerSpec, with_mcp_tools
from handrail.contracts.tools import ToolPolicy, ToolPolicyOverride, compile_deny_patterns


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


class Baseline(_Strict):
    """What is normal for this agent, learnt from its finished tasks, and what a task unlike it gets.

    The circuit-breaker keeps, per agent, an exponentially weighted mean of four measures of
    each finished task: its cost, its steps, its tool calls per step, and the share of its
    model and tool calls that failed. A running task whose measure goes past the bound is a
    deviation: a metric, an event on ``events``, an audit record and, with ``on_deviation:
    escalate``, a halt of the task, which its agent's autonomy turns into a review or an end.
    """

    tasks: int = Field(
        default=50, ge=2, description="The rolling window: each finished task weighs 2/(tasks+1) in the mean."
    )
    warmup_tasks: int = Field(default=20, ge=1, description="Finished tasks learnt from before any is judged.")
    max_ratio: float = Field(
        default=3.0, gt=1, description="Cost, steps or tool calls per step above this multiple of the mean."
    )
    max_error_rate_increase: float = Field(
        default=0.5, gt=0, le=1, description="Failed share of calls above the mean's by more than this."
    )
    min_calls: int = Field(default=4, ge=1, description="Calls a task makes before its error rate is judged.")
    on_deviation: Literal["report", "escalate"] = Field(
        default="escalate", description="report: metric, event and audit record only; escalate: also halt the task."
    )


class ScriptedCall(_Strict):
    """One scripted turn that calls a tool; strings ``${path}`` are filled from the scope."""

    call: str
    args: dict[str, Any] = Field(default_factory=dict)
    delay_s: float = Field(default=0.0, ge=0, le=600, description="How long the turn takes, like a real model.")


class ScriptedAnswer(_Strict):
    """The scripted turn that ends the step with an output."""

    answer: dict[str, Any]
    confidence: float = Field(default=1.0, ge=0, le=1)
    delay_s: float = Field(default=0.0, ge=0, le=600, description="How long the turn takes, like a real model.")


class Shadow(_Strict):
    """A candidate version of the agent, run beside it on copies of its live steps (``handrail_worker.shadow``):
    another version of its prompt and/or another model of the catalogue."""

    prompt: str | None = Field(default=None, description="A version of the agent's prompt (config/prompts/<prompt>/).")
    model: str | None = Field(default=None, description="A model of models.yaml, instead of the agent's chain.")
    max_in_flight: int = Field(default=32, ge=1, le=1024, description="Shadow steps run at once, at most.")

    @model_validator(mode="after")
    def _something_differs(self) -> Shadow:
        if self.prompt is None and self.model is None:
            raise ValueError("a shadow names a `prompt` version, a `model`, or both")
        return self


class CanaryRule(_Strict):
    """When a canary of this agent's prompt (``handrail prompts canary AGENT@V``) rolls itself back.

    The circuit-breaker counts the tasks the agent ran in, per version, over the last
    ``window_s`` seconds: how many ended failed or halted, rejected, went to a person, and
    what they cost. Once both versions have ``min_tasks`` tasks in the window, the candidate
    is rolled back when any of its rates is above the live version's by more than its margin,
    or its mean cost per task is above ``max_cost_ratio`` times the live one's.
    """

    window_s: float = Field(default=900.0, gt=0, le=7 * 86_400, description="How far back the rates are counted.")
    min_tasks: int = Field(default=20, ge=1, description="Tasks each version needs in the window before judging.")
    max_failure_rate_increase: float = Field(
        default=0.05, ge=0, le=1, description="Failed or halted share of tasks above the live version's by more."
    )
    max_rejection_rate_increase: float = Field(default=0.05, ge=0, le=1, description="Rejected share, the same.")
    max_review_rate_increase: float = Field(default=0.10, ge=0, le=1, description="Share sent to a person, the same.")
    max_cost_ratio: float = Field(default=1.5, gt=1, description="Mean cost per task above this multiple of live.")


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
    baseline: Baseline = Field(default_factory=Baseline)
    shadow: Shadow | None = Field(default=None, description="A candidate version run beside the live one, dry.")
    canary: CanaryRule = Field(default_factory=CanaryRule, description="When a canary of its prompt rolls back.")
    context: ContextBudget = Field(
        default_factory=ContextBudget, description="Token caps per prompt section and what happens over them."
    )
    plan: list[ScriptedCall | ScriptedAnswer] = Field(
        default_factory=list, description="What the built-in `scripted` model does, turn by turn."
    )
    # Tool retries and untrusted observations: handrail.contracts.tools.
    tool_defaults: ToolPolicy = Field(default_factory=ToolPolicy, description="Retries and timeout of every tool.")
    tool_policies: dict[str, ToolPolicyOverride] = Field(
        default_factory=dict, description="Per tool: what differs from tool_defaults."
    )
    observation_deny_patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions (case-insensitive); an observation matching one parks the step for review.",
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

    @field_validator("tool_policies")
    @classmethod
    def _policies_of_own_tools(
        cls, policies: dict[str, ToolPolicyOverride], info: ValidationInfo
    ) -> dict[str, ToolPolicyOverride]:
        tools, defaults = info.data.get("tools", []), info.data.get("tool_defaults", ToolPolicy())
        for name, override in policies.items():
            if name not in tools:
                raise ValueError(f"{name!r} is not one of the agent's tools {tools}")
            try:
                override.over(defaults)
            except ValidationError as exc:
                raise ValueError(f"{name}: {'; '.join(e['msg'] for e in exc.errors())}") from None
        return policies

    @field_validator("observation_deny_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        compile_deny_patterns(patterns)
        return patterns

    def tool_policy(self, tool: str) -> ToolPolicy:
        """How calls to ``tool`` are retried and bounded: ``tool_defaults`` with the tool's own entry."""
        override = self.tool_policies.get(tool)
        return self.tool_defaults if override is None else override.over(self.tool_defaults)

    @cached_property
    def deny_patterns(self) -> list[re.Pattern[str]]:
        """``observation_deny_patterns``, compiled (checked when the contract loaded)."""
        return compile_deny_patterns(self.observation_deny_patterns)
