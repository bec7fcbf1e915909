"""Counting how reviews ended from the review topics' records: final records only, each review once."""

from __future__ import annotations

from datetime import timedelta

from tests.fixtures.reviews import decided, requested

from handrail.autonomy import Counts, Outcome, Tally, outcome_of
from handrail.messages import utcnow

A, W = "expense-approver", "expense-approval"


def test_the_final_record_says_how_a_review_ended() -> None:
    request = requested(A, W)
    for outcome in Outcome:
        assert outcome_of(decided(request, outcome)) == outcome
    assert outcome_of(decided(request, Outcome.APPROVED_UNCHANGED, final=False)) is None, "a reviewer's vote"
    comment = decided(request, Outcome.APPROVED_UNCHANGED).model_copy(update={"decision": None})
    assert outcome_of(comment) is None


def test_requests_and_decisions_join_in_any_order_and_count_once() -> None:
    tally = Tally()
    first, second, third = requested(A, W), requested(A, W), requested("expense-intake", W)
    tally.decision(decided(second, Outcome.REJECTED))  # read before its request (two topics, side by side)
    for record in (first, second, third):
        tally.request(record)
    tally.decision(decided(first, Outcome.EDITED))
    tally.decision(decided(first, Outcome.EDITED))  # read again after a restart
    tally.decision(decided(first, Outcome.EDITED, final=False))
    tally.request(first.model_copy(update={"level": 1, "role": "director"}))  # an escalation: the same review
    tally.decision(decided(third, Outcome.TIMED_OUT))
    assert tally.counts(A, W, since=None, window=100) == Counts(edited=1, rejected=1)
    assert tally.counts("expense-intake", W, since=None, window=100) == Counts(timed_out=1)
    assert tally.counts(A, "other", since=None, window=100).reviews == 0


def test_only_reviews_requested_since_the_level_took_effect_count_at_most_the_window() -> None:
    tally = Tally()
    now = utcnow()
    old = requested(A, W, at=now - timedelta(hours=1))
    tally.request(old)
    tally.decision(decided(old, Outcome.REJECTED))
    for _ in range(5):
        new = requested(A, W, at=now)
        tally.request(new)
        tally.decision(decided(new, Outcome.APPROVED_UNCHANGED))
    assert tally.counts(A, W, since=None, window=100) == Counts(approved_unchanged=5, rejected=1)
    assert tally.counts(A, W, since=now - timedelta(minutes=1), window=100) == Counts(approved_unchanged=5)
    assert tally.counts(A, W, since=None, window=3) == Counts(approved_unchanged=3), "the latest 3"


def test_unreadable_bytes_are_skipped() -> None:
    tally = Tally()
    assert not tally.take("requested", b"{not json")
    assert not tally.take("decided", b'{"review_id": "x"}')
    request = requested(A, W)
    assert tally.take("requested", request.to_bytes())
    assert tally.take("decided", decided(request, Outcome.APPROVED_UNCHANGED).to_bytes())
    assert tally.counts(A, W, since=None, window=10).ratio(Outcome.APPROVED_UNCHANGED) == 1.0


def test_counts_give_ratios_and_a_summary() -> None:
    sample = Counts(approved_unchanged=3, edited=1)
    assert sample.reviews == 4 and sample.ratio("edited") == 0.25 and Counts().ratio("rejected") == 0.0
    assert sample.summary() == {
        "reviews": 4,
        "approved_unchanged_ratio": 0.75,
        "edited_ratio": 0.25,
        "rejected_ratio": 0.0,
        "timed_out_ratio": 0.0,
    }
