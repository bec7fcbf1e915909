"""Reading everything back from the start - results, dead letters, the audit trail, the ledger - and judging it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from handrail.audit import AuditRecord, verify_chain
from handrail.bus import make_reader
from handrail.contracts.workflows import TaskLimits
from handrail.messages import DeadLetter, TaskResult
from handrail.recovery.rebuild import read_topic
from handrail.signing import Verifier
from handrail.topics import Topics

#: Lost tasks whose trails the verdict shows.
_TRAILS = 3


@dataclass
class Verdict:
    """What the soak counts; ``violations`` lists every broken promise (empty: all held)."""

    submitted: int = 0
    exactly_one: int = 0
    lost: list[str] = field(default_factory=list)
    duplicate_results: list[str] = field(default_factory=list)
    republished: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    duplicate_side_effects: list[str] = field(default_factory=list)
    side_effects: int = 0
    broken_chains: list[str] = field(default_factory=list)
    chains_checked: int = 0
    overspent: list[str] = field(default_factory=list)
    poison_sent: int = 0
    poison_dead_lettered: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    dead_letters_republished: int = 0
    #: For each lost task (a few), the audit trail it left: where it stopped.
    trails: dict[str, list[str]] = field(default_factory=dict)

    @property
    def violations(self) -> list[str]:
        found = []
        for name, items in (
            ("lost", self.lost),
            ("duplicate results", self.duplicate_results),
            ("duplicate side effects", self.duplicate_side_effects),
            ("broken audit chains", self.broken_chains),
            ("overspent tasks", self.overspent),
        ):
            if items:
                found.append(f"{name}: {len(items)} ({', '.join(sorted(items)[:5])}{' ...' if len(items) > 5 else ''})")
        if self.poison_dead_lettered < self.poison_sent:
            found.append(f"poison messages not dead-lettered: {self.poison_sent - self.poison_dead_lettered}")
        return found


async def _read_all(bootstrap: str, topic: str) -> list[tuple[str, bytes]]:
    reader: AIOKafkaConsumer = make_reader(bootstrap, "chaos-verdict")
    await reader.start()
    try:
        return [((r.key or b"").decode(errors="replace"), r.value or b"") async for r in read_topic(reader, topic)]
    finally:
        await reader.stop()


async def results_by_task(bootstrap: str, topics: Topics) -> dict[str, list[TaskResult]]:
    found: dict[str, list[TaskResult]] = defaultdict(list)
    for _, value in await _read_all(bootstrap, topics.results):
        result = TaskResult.model_validate_json(value)
        found[result.task_id].append(result)
    return found


async def dead_lettered_keys(bootstrap: str, topics: Topics) -> set[str]:
    """The keys of every record on the dead-letter topic."""
    return {key for key, _ in await _read_all(bootstrap, topics.dlq)}


async def judge(
    bootstrap: str,
    topics: Topics,
    submitted: list[str],
    limits: dict[str, TaskLimits],
    ledger: Path,
    poison_keys: list[str],
    verifier: Verifier | None = None,
) -> Verdict:
    """Judge the run from the topics: results (within their workflow's ``limits``), chains (and with
    ``verifier`` their signatures), effects."""
    verdict = Verdict(submitted=len(submitted), poison_sent=len(poison_keys))
    results = await results_by_task(bootstrap, topics)
    for task_id in submitted:
        got = results.get(task_id, [])
        ids = {r.message_id for r in got}
        verdict.republished += len(got) - len(ids)
        if not got:
            verdict.lost.append(task_id)
            continue
        if len(ids) > 1:
            verdict.duplicate_results.append(task_id)
            continue
        verdict.exactly_one += 1
        result = got[0]
        verdict.statuses[result.status.value] += 1
        capped = limits[result.workflow]
        if (
            result.cost_usd > capped.max_cost_usd + 1e-9
            or result.steps > capped.max_steps
            or result.tokens > capped.max_tokens
        ):
            verdict.overspent.append(task_id)

    chains: dict[str, list[AuditRecord]] = defaultdict(list)
    for _, value in await _read_all(bootstrap, topics.audit):
        record = AuditRecord.model_validate_json(value)
        chains[record.task_id].append(record)
    for task_id in submitted:
        if task_id in chains:
            verdict.chains_checked += 1
            if not verify_chain([(None, r) for r in chains[task_id]], verifier).intact:
                verdict.broken_chains.append(task_id)
    for task_id in sorted(verdict.lost)[:_TRAILS]:
        verdict.trails[task_id] = [
            f"{r.at.time().isoformat()} #{r.seq} {r.actor} {r.action}" + (f" ({r.step})" if r.step else "")
            for r in chains[task_id]
        ]

    dead = await _read_all(bootstrap, topics.dlq)
    poisoned = set(poison_keys)
    letters = {(letter := DeadLetter.model_validate_json(value)).message_id: (key, letter) for key, value in dead}
    verdict.dead_letters_republished = len(dead) - len(letters)
    for key, letter in letters.values():
        verdict.dead_letters[letter.error_type] += 1
        if key in poisoned:
            poisoned.discard(key)
            verdict.poison_dead_lettered += 1

    entries = _ledger_entries_by_task(ledger)
    verdict.side_effects = sum(entries.values())
    verdict.duplicate_side_effects = [task_id for task_id, n in entries.items() if n > 1]
    return verdict


def _ledger_entries_by_task(ledger: Path) -> Counter[str]:
    """How many entries the demo ledger holds per task (the effect's target, read as its owner would)."""
    entries: Counter[str] = Counter()
    if ledger.exists():
        for line in ledger.read_text().splitlines():
            entries[str(json.loads(line).get("task_id"))] += 1
    return entries
