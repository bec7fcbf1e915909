"""What the graduation rule recommends: promote on a long clean record, demote on a breach, else hold."""

from __future__ import annotations

import pytest

from handrail.autonomy import Counts, recommend
from handrail.contracts import Autonomy, GraduationRule
from handrail.contracts.graduation import Demotion, Promotion

GATES, EXCEPTIONS, AUDIT = Autonomy.APPROVAL_GATES, Autonomy.EXCEPTION_BASED, Autonomy.AUDIT_BASED
RULE = GraduationRule(
    promote={GATES: Promotion(min_reviews=200, min_approved_unchanged_ratio=0.98)},
    demote=Demotion(min_reviews=20, max_rejected_ratio=0.05, max_timed_out_ratio=0.10),
)


def counts(unchanged: int = 0, edited: int = 0, rejected: int = 0, timed_out: int = 0) -> Counts:
    return Counts(approved_unchanged=unchanged, edited=edited, rejected=rejected, timed_out=timed_out)


def test_200_reviews_at_98_percent_unchanged_promote_approval_gates_to_exception_based() -> None:
    advice = recommend(RULE, GATES, counts(unchanged=196, edited=4))
    assert (advice.action, advice.level, advice.direction) == ("promote", EXCEPTIONS, 1)
    assert advice.why == "approved unchanged 98.0% of 200 reviews >= 98.0%"


@pytest.mark.parametrize(
    ("sample", "why"),
    [
        (counts(unchanged=199), "199 of 200 reviews needed so far"),
        (counts(unchanged=195, edited=5), "approved unchanged 97.5% of 200 reviews < 98.0%"),
    ],
)
def test_too_few_reviews_or_too_many_edits_hold(sample: Counts, why: str) -> None:
    advice = recommend(RULE, GATES, sample)
    assert (advice.action, advice.level, advice.changes, advice.why) == ("hold", GATES, False, why)


def test_a_level_without_a_promotion_is_never_promoted_from() -> None:
    advice = recommend(RULE, EXCEPTIONS, counts(unchanged=1000))
    assert (advice.action, advice.why) == ("hold", "no promotion from exception-based is configured")


def test_exception_based_to_audit_based_when_configured() -> None:
    rule = RULE.model_copy(
        update={"promote": {EXCEPTIONS: Promotion(min_reviews=10, min_approved_unchanged_ratio=1.0)}}
    )
    assert recommend(rule, EXCEPTIONS, counts(unchanged=10)).level == AUDIT
    assert recommend(rule, EXCEPTIONS, counts(unchanged=9, edited=1)).action == "hold"


def test_a_rejection_rate_above_the_maximum_demotes_one_level() -> None:
    advice = recommend(RULE, AUDIT, counts(unchanged=18, rejected=2))
    assert (advice.action, advice.level, advice.direction) == ("demote", EXCEPTIONS, -1)
    assert advice.why == "rejected 10.0% > 5.0% of 20 reviews"
    assert recommend(RULE, EXCEPTIONS, counts(unchanged=18, rejected=2)).level == GATES


def test_at_the_maximum_is_not_above_it() -> None:
    assert recommend(RULE, EXCEPTIONS, counts(unchanged=19, rejected=1)).action == "hold"


def test_each_ratio_that_is_set_is_checked_and_a_breach_names_them_all() -> None:
    advice = recommend(RULE, EXCEPTIONS, counts(unchanged=14, rejected=2, timed_out=4))
    assert advice.action == "demote"
    assert advice.why == "rejected 10.0% > 5.0%; timed out 20.0% > 10.0% of 20 reviews"
    edits_unchecked = recommend(RULE, EXCEPTIONS, counts(unchanged=10, edited=10))
    assert edits_unchecked.action == "hold", "max_edited_ratio is not set: edits do not demote"


def test_a_breach_is_judged_only_on_enough_reviews() -> None:
    assert recommend(RULE, EXCEPTIONS, counts(unchanged=10, rejected=9)).action == "hold"


def test_a_breach_outweighs_a_clean_enough_record_and_approval_gates_cannot_go_lower() -> None:
    rule = RULE.model_copy(update={"promote": {GATES: Promotion(min_reviews=20, min_approved_unchanged_ratio=0.5)}})
    advice = recommend(rule, GATES, counts(unchanged=18, rejected=2))
    assert advice.action == "hold" and "approval-gates is the lowest level" in advice.why


def test_without_a_rule_nothing_is_recommended() -> None:
    advice = recommend(None, GATES, counts(unchanged=10_000))
    assert (advice.action, advice.level) == ("hold", GATES) and "no graduation rule" in advice.why
