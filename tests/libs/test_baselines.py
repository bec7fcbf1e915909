"""Judging a running task against its agent's baseline: the bounds, the warm-up, a mean of zero."""

from __future__ import annotations

from handrail.baselines import Baseline, Figures, Measure, judge
from handrail.contracts import Baseline as Policy

POLICY = Policy(warmup_tasks=5, max_ratio=3.0, max_error_rate_increase=0.4, min_calls=4)
LEARNT = Baseline(
    tasks=5,
    means=(
        (Measure.COST_USD, 0.02),
        (Measure.STEPS, 1.0),
        (Measure.TOOL_CALLS_PER_STEP, 2.0),
        (Measure.ERROR_RATE, 0.1),
    ),
)


def measures(figures: Figures, baseline: Baseline = LEARNT) -> set[Measure]:
    return {d.measure for d in judge(figures, baseline, POLICY)}


def test_each_measure_past_its_bound_is_a_deviation_and_within_it_is_not() -> None:
    at_the_bounds = Figures(cost_usd=0.06, steps=3, tool_calls=18, calls=20, errors=10)
    assert measures(at_the_bounds) == set(), "3x the cost, 6 tool calls per step (3x), 0.5 errors (0.1 + 0.4)"
    assert measures(Figures(cost_usd=0.06, steps=3, tool_calls=19, calls=20)) == {Measure.TOOL_CALLS_PER_STEP}
    assert measures(Figures(cost_usd=0.061, steps=1, tool_calls=2, calls=4)) == {Measure.COST_USD}
    assert measures(Figures(steps=4, tool_calls=8, calls=8)) == {Measure.STEPS}
    assert measures(Figures(steps=1, tool_calls=2, calls=4, errors=3)) == {Measure.ERROR_RATE}, "0.75 - 0.1 > 0.4"
    assert measures(Figures(steps=1, tool_calls=2, calls=4, errors=2)) == set(), "0.5 - 0.1 is within 0.4"


def test_nothing_is_judged_during_the_warm_up_nor_against_a_mean_of_zero() -> None:
    runaway = Figures(cost_usd=9.0, steps=40, tool_calls=400, calls=400, errors=400)
    assert measures(runaway, Baseline(tasks=4, means=LEARNT.means)) == set()
    free = Baseline(tasks=5, means=((Measure.COST_USD, 0.0), (Measure.STEPS, 1.0)))
    assert Measure.COST_USD not in measures(Figures(cost_usd=1.0, steps=1), free), "no ratio to zero means anything"


def test_the_error_rate_waits_for_enough_calls() -> None:
    assert measures(Figures(steps=1, calls=3, errors=3)) == set()
    assert measures(Figures(steps=1, calls=4, errors=4)) == {Measure.ERROR_RATE}
