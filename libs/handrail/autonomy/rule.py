"""What the graduation rule recommends for one (agent, workflow): promote, demote or hold, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from handrail.autonomy.levels import Effective
from handrail.autonomy.measure import Counts, Outcome, Tally
from handrail.contracts.agents import Autonomy
from handrail.contracts.graduation import LADDER, GraduationRule

Action = Literal["promote", "demote", "hold"]


@dataclass(frozen=True)
class Recommendation:
    """The level the rule recommends (the current one for ``hold``), and why, for a person."""

    action: Action
    level: Autonomy
    why: str

    @property
    def changes(self) -> bool:
        return self.action != "hold"

    @property
    def direction(self) -> int:
        """+1 promote, -1 demote, 0 hold (the ``handrail_autonomy_recommendation`` gauge)."""
        return {"promote": 1, "demote": -1, "hold": 0}[self.action]


@dataclass(frozen=True)
class Assessment:
    """One (agent, workflow): its level, the reviews counted for it, and what the rule recommends."""

    effective: Effective
    counts: Counts
    recommendation: Recommendation


def assess(effective: Effective, tally: Tally, rule: GraduationRule | None) -> Assessment:
    """Count the reviews since ``effective`` took effect (within the rule's window) and judge them."""
    window = (rule or GraduationRule()).window_reviews
    counts = tally.counts(effective.agent, effective.workflow, since=effective.since, window=window)
    return Assessment(effective, counts, recommend(rule, effective.level, counts))


def recommend(rule: GraduationRule | None, level: Autonomy, counts: Counts) -> Recommendation:
    """Demotion first (a breach outweighs a good record), then promotion, else hold."""
    if rule is None:
        return Recommendation("hold", level, "no graduation rule (config/autonomy.yaml)")
    step = LADDER.index(level)
    demote = rule.demote
    if demote is not None and counts.reviews >= demote.min_reviews:
        breaches = [
            f"{outcome.replace('_', ' ')} {_pct(counts.ratio(outcome))} > {_pct(limit)}"
            for outcome, limit in demote.limits().items()
            if counts.ratio(outcome) > limit
        ]
        if breaches:
            of = f"{'; '.join(breaches)} of {counts.reviews} reviews"
            if step == 0:
                return Recommendation("hold", level, f"{of}, but {level.value} is the lowest level")
            return Recommendation("demote", LADDER[step - 1], of)
    promotion = rule.promote.get(level)
    if promotion is None:
        return Recommendation("hold", level, f"no promotion from {level.value} is configured")
    if counts.reviews < promotion.min_reviews:
        return Recommendation("hold", level, f"{counts.reviews} of {promotion.min_reviews} reviews needed so far")
    approved = counts.ratio(Outcome.APPROVED_UNCHANGED)
    judged = f"approved unchanged {_pct(approved)} of {counts.reviews} reviews"
    if approved < promotion.min_approved_unchanged_ratio:
        return Recommendation("hold", level, f"{judged} < {_pct(promotion.min_approved_unchanged_ratio)}")
    return Recommendation("promote", LADDER[step + 1], f"{judged} >= {_pct(promotion.min_approved_unchanged_ratio)}")


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"
