"""What a step did and what it cost: its calls (``Decision``), their ``Usage``, the task's ``BudgetSnapshot``,
and the more budget a person may grant it (``BudgetTopUp``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from handrail.messages.base import Payload


class BudgetSnapshot(Payload):
    """What the task has spent so far, and its caps, as the sender saw them."""

    steps_used: int = Field(default=0, ge=0)
    tokens_used: int = Field(default=0, ge=0)
    cost_usd_used: float = Field(default=0.0, ge=0)
    max_steps: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)


class BudgetTopUp(Payload):
    """More budget for one task: what a reviewer grants approving its halt, or a workflow's ``max_top_up``."""

    tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    steps: int = Field(default=0, ge=0)
    wall_clock_s: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="Added to the task's deadline.")

    @property
    def empty(self) -> bool:
        return not (self.tokens or self.cost_usd or self.steps or self.wall_clock_s)

    def plus(self, other: BudgetTopUp) -> BudgetTopUp:
        return BudgetTopUp(
            tokens=self.tokens + other.tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            steps=self.steps + other.steps,
            wall_clock_s=self.wall_clock_s + other.wall_clock_s,
        )

    def beyond(self, limit: BudgetTopUp) -> list[str]:
        """Each amount above ``limit``'s, as ``"cost_usd 2.0 > 1.0"``; empty when none is."""
        return [
            f"{name} {mine:g} > {bound:g}"
            for name, mine, bound in (
                ("tokens", self.tokens, limit.tokens),
                ("cost_usd", self.cost_usd, limit.cost_usd),
                ("steps", self.steps, limit.steps),
                ("wall_clock_s", self.wall_clock_s, limit.wall_clock_s),
            )
            # A cent of a micro-dollar is rounding, not an overdraft.
            if mine > bound + 1e-9
        ]


class Usage(Payload):
    """What one step consumed."""

    model_calls: int = Field(default=0, ge=0)
    tool_calls: int = Field(default=0, ge=0)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class Decision(Payload):
    """One action the agent took inside a step: a model call or a tool call."""

    kind: Literal["model_call", "tool_call"]
    name: str = Field(description="The model or tool name.")
    outcome: Literal["ok", "error", "rejected", "short_circuited"]
    args_hash: str | None = None
    error: str | None = None
    latency_ms: float = Field(ge=0)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    prompt: str | None = Field(default=None, description="For a model call: the prompt name@version it was made with.")
