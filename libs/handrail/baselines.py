"""Behavioural baselines: what is normal for an agent, and when a task is not.

Per agent, the circuit-breaker keeps the running figures of each task from its
decision events (``Figures``: cost, steps, tool calls, calls, failed calls) and,
when a task completes, folds them into the agent's ``Baseline``: an
exponentially weighted mean of four measures over about ``tasks`` tasks (the
plain mean until then). Only completed tasks are learnt from: a task that failed,
was rejected or halted is not what normal looks like.

``judge`` compares a running task with its agent's baseline once the baseline has
seen ``warmup_tasks`` tasks. A measure over its bound is a ``Deviation``:

- ``cost_usd``, ``steps``, ``tool_calls_per_step``: more than ``max_ratio`` times
  the mean (a mean of zero judges nothing: no ratio to it means anything);
- ``error_rate``: once the task made ``min_calls`` calls, a failed share more than
  ``max_error_rate_increase`` above the mean's.

The figures grow as the task runs, so a runaway task is caught while it runs:
its failed calls are reported at once, its successful ones with each step's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from handrail.contracts.agents import Baseline as BaselinePolicy

#: What a step stopped for a deviation is reported as, and a review of it says.
BEHAVIOUR_DEVIATION = "behaviour_deviation"


class Measure(StrEnum):
    """What a baseline keeps, per task."""

    COST_USD = "cost_usd"
    STEPS = "steps"
    TOOL_CALLS_PER_STEP = "tool_calls_per_step"
    ERROR_RATE = "error_rate"


@dataclass(frozen=True)
class Figures:
    """One agent's figures in one task so far."""

    cost_usd: float = 0.0
    steps: int = 0
    tool_calls: int = 0
    calls: int = 0  # model and tool calls that ran (ok or failed)
    errors: int = 0

    def value(self, measure: Measure) -> float:
        match measure:
            case Measure.COST_USD:
                return self.cost_usd
            case Measure.STEPS:
                return float(self.steps)
            case Measure.TOOL_CALLS_PER_STEP:
                return self.tool_calls / max(self.steps, 1)
            case Measure.ERROR_RATE:
                return self.errors / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Baseline:
    """An agent's baseline: the tasks it was learnt from, and each measure's mean."""

    tasks: int = 0
    means: tuple[tuple[Measure, float], ...] = ()

    def mean(self, measure: Measure) -> float:
        return dict(self.means).get(measure, 0.0)


@dataclass(frozen=True)
class Deviation:
    """A measure of a running task past its agent's bound."""

    measure: Measure
    value: float
    mean: float
    tasks: int

    def describe(self, agent: str) -> str:
        """For the event, the audit trail and the review: the figure, against what."""
        return (
            f"{self.measure.value} {self.value:.4g} against agent {agent}'s baseline mean {self.mean:.4g} "
            f"over {self.tasks} tasks"
        )


def judge(figures: Figures, baseline: Baseline, policy: BaselinePolicy) -> list[Deviation]:
    """The measures of ``figures`` past ``policy``'s bounds around ``baseline``; none during the warm-up."""
    if baseline.tasks < policy.warmup_tasks:
        return []
    found = []
    for measure in Measure:
        value, mean = figures.value(measure), baseline.mean(measure)
        if measure == Measure.ERROR_RATE:
            past = figures.calls >= policy.min_calls and value - mean > policy.max_error_rate_increase
        else:
            past = mean > 0 and value > policy.max_ratio * mean
        if past:
            found.append(Deviation(measure, value, mean, baseline.tasks))
    return found
