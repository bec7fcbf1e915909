"""Which dead letters a ``dlq`` command acts on: ids by unique prefix, filters, a time range."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import typer

from handrail.messages import DeadLetter
from handrail_cli.common import resolve_prefix

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: datetime, option: str) -> datetime:
    """``text`` as a time: ISO-8601 (UTC when it names no zone) or a duration ago (``90s``, ``15m``, ``2h``, ``7d``)."""
    ago = _AGO.match(text.strip())
    if ago is not None:
        return now - timedelta(seconds=float(ago.group(1)) * _UNIT_S[ago.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an ISO-8601 time (2026-12-03T18:00:00Z) nor a time ago (90s, 15m, 2h, 7d, 1w)",
            param_hint=option,
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    """What picks dead letters: each filter given must match (ids: any of them)."""

    ids: tuple[str, ...] = ()
    error_type: str | None = None
    reason_contains: str | None = None
    source_topic: str | None = None
    task_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(
        cls,
        ids: Sequence[str],
        *,
        error_type: str | None,
        reason_contains: str | None,
        source_topic: str | None,
        task_id: str | None,
        since: str | None,
        until: str | None,
        now: datetime,
    ) -> Selection:
        """The selection the command line asks for; a usage error when it is bad or picks everything."""
        start = parse_when(since, now, "--since") if since is not None else None
        end = parse_when(until, now, "--until") if until is not None else None
        if start is not None and end is not None and start > end:
            raise typer.BadParameter(f"--since ({start.isoformat()}) is after --until ({end.isoformat()})")
        selection = cls(tuple(ids), error_type, reason_contains, source_topic, task_id, start, end)
        if selection == cls():
            raise typer.BadParameter(
                "give dead letter IDs or at least one filter (--error-type, --reason-contains, --source-topic,"
                " --task, --since, --until): a replay of the whole dead-letter queue is never implied"
            )
        return selection

    def pick(self, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
        """The letters this selection matches, oldest first; an id that matches none is a usage error."""
        letters = sorted(letters, key=lambda x: x.dead_lettered_at)
        if self.ids:
            known = [x.message_id for x in letters]
            wanted = {resolve_prefix(typed, known, "dead letter", "ID") for typed in self.ids}
            letters = [x for x in letters if x.message_id in wanted]
        return [x for x in letters if self._matches(x)]

    def _matches(self, letter: DeadLetter) -> bool:
        return (
            (self.error_type is None or letter.error_type == self.error_type)
            and (self.reason_contains is None or self.reason_contains.lower() in letter.reason.lower())
            and (self.source_topic is None or letter.source_topic == self.source_topic)
            and (self.task_id is None or letter.task_id == self.task_id)
            and (self.since is None or letter.dead_lettered_at >= self.since)
            and (self.until is None or letter.dead_lettered_at <= self.until)
        )
