"""``handrail dlq replay``'s choices without a bus: what it selects, what it sends where, what it refuses."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from tests.fixtures.cli import handrail

from handrail.messages import DeadLetter
from handrail.topics import Topics
from handrail_cli.dlq_plan import Outcome, duplicate_of, plan
from handrail_cli.dlq_select import Selection, parse_when

NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
TOPICS = Topics("handrail.")
BODY = b'{"message_id":"m-1","task_id":"t-1"}'


def letter(**fields: Any) -> DeadLetter:
    original = fields.pop("original_bytes", BODY)
    values: dict[str, Any] = {
        "message_id": str(uuid.uuid4()),
        "reason": "failed 5 times in a row",
        "error_type": "poison",
        "source_topic": "handrail.agent.expense-intake",
        "partition": 1,
        "offset": 7,
        "original": base64.b64encode(original).decode(),
        "original_size": len(original),
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "task_id": "t-1",
        "service": "worker-expense-intake",
        "dead_lettered_at": NOW,
    }
    return DeadLetter(**{**values, **fields})


def test_times_are_iso_8601_or_a_time_ago() -> None:
    assert parse_when("2h", NOW, "--since") == NOW - timedelta(hours=2)
    assert parse_when("90s", NOW, "--since") == NOW - timedelta(seconds=90)
    assert parse_when("1.5d", NOW, "--since") == NOW - timedelta(hours=36)
    assert parse_when("2026-12-01T10:00:00Z", NOW, "--since") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_when("2026-12-01T10:00:00", NOW, "--since").tzinfo == UTC, "no zone: UTC"
    with pytest.raises(typer.BadParameter, match="'yesterday' is neither an ISO-8601 time"):
        parse_when("yesterday", NOW, "--since")
    with pytest.raises(typer.BadParameter):
        parse_when("-2h", NOW, "--until")


def parse(*ids: str, **options: str | None) -> Selection:
    given: dict[str, Any] = dict.fromkeys(
        ("error_type", "reason_contains", "source_topic", "task_id", "since", "until"), None
    )
    return Selection.parse(list(ids), **{**given, **options}, now=NOW)


def test_a_selection_must_pick_something_and_its_range_must_not_be_empty() -> None:
    with pytest.raises(typer.BadParameter, match="give dead letter IDs or at least one filter"):
        parse()
    with pytest.raises(typer.BadParameter, match="is after --until"):
        parse(since="1h", until="2h")


def test_each_filter_given_must_match() -> None:
    old = letter(dead_lettered_at=NOW - timedelta(days=2), error_type="internal_error", reason="KeyError: 'x'")
    other_task = letter(task_id="t-2", source_topic="handrail.steps")
    poison = letter()
    letters = [poison, other_task, old]
    assert parse(error_type="poison").pick(letters) == [poison, other_task]
    assert parse(reason_contains="keyerror").pick(letters) == [old]
    assert parse(source_topic="handrail.steps").pick(letters) == [other_task]
    assert parse(task_id="t-1").pick(letters) == [old, poison], "oldest first"
    assert parse(since="1d").pick(letters) == [poison, other_task]
    assert parse(until="1d").pick(letters) == [old]
    assert parse(poison.message_id[:8], error_type="internal_error").pick(letters) == []
    assert parse(poison.message_id[:8]).pick(letters) == [poison]
    with pytest.raises(typer.BadParameter, match="no dead letter starts with 'zzz'"):
        parse("zzz").pick(letters)


def test_an_original_goes_back_to_its_source_topic_unchanged() -> None:
    for topic, payload_type in [
        ("handrail.tasks", "TaskSubmitted"),
        ("handrail.agent.expense-intake", "HandoffEnvelope"),
        ("handrail.steps", "StepCompleted"),
    ]:
        item = plan(letter(source_topic=topic), TOPICS)
        assert (item.outcome, item.topic, item.payload_type, item.original) == (
            Outcome.WOULD_REPLAY, topic, payload_type, BODY
        )  # fmt: skip
        assert item.as_json()["message_id"] == "m-1" and item.as_json()["key"] == "t-1"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"original_truncated": True, "original_size": 900_000}, "a cut message cannot be replayed"),
        ({"original_sha256": "0" * 64}, "does not match its original_sha256"),
        ({"original": "not base64!"}, "not valid base64"),
        ({"task_id": None}, "it names no task"),
        ({"source_topic": "handrail.events"}, "time windows"),
        ({"source_topic": "handrail.reviews.requested"}, "its task stays parked"),
        ({"source_topic": "handrail.results"}, "not replayable (only from tasks, agent.<name> and steps)"),
        ({"source_topic": "handrail.agent."}, "not replayable"),
        ({"source_topic": "other.tasks"}, "not a topic of this deployment"),
    ],
)
def test_what_cannot_be_replayed_is_refused_saying_why(fields: dict[str, Any], why: str) -> None:
    item = plan(letter(**fields), TOPICS)
    assert item.outcome == Outcome.REFUSED and why in item.why
    assert item.as_json()["topic"] is None, "nothing would be sent"


def test_the_same_message_dead_lettered_again_is_sent_once() -> None:
    first, again, other = letter(), letter(offset=99), letter(original_bytes=b'{"task_id":"t-1","x":1}')
    same_bytes_elsewhere = letter(source_topic="handrail.steps")
    items = [plan(x, TOPICS) for x in (first, again, other, same_bytes_elsewhere)]
    assert duplicate_of(items) == {again.message_id: first.message_id}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2h"], "Missing option '--reason'"),
        (["--since", "2h", "--reason", "  "], "say why they are replayed"),
        (["--reason", "x"], "give dead letter IDs or at least one filter"),
        (["--reason", "x", "--since", "last week"], "is neither an ISO-8601 time"),
        (["--reason", "x", "--until", "soon"], "--until"),
        (["--reason", "x", "--since", "1h", "--until", "2h"], "is after --until"),
        (["--reason", "x", "--since", "1h", "--limit", "0"], "--limit"),
    ],
)
def test_bad_arguments_are_usage_errors_before_anything_is_read(args: list[str], message: str) -> None:
    # No bus here at all: port 9 answers nothing, so getting past the arguments would fail otherwise.
    result = handrail("dlq", "replay", *args, env={"HANDRAIL_KAFKA_BOOTSTRAP": "127.0.0.1:9"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
