"""Verifying a task's audit chain as read back from the audit topic."""

from __future__ import annotations

from dataclasses import dataclass

from handrail.audit.record import AuditRecord
from handrail.hashing import GENESIS, join_hash
from handrail.signing import SignatureRejected, Verifier, audit_signers


@dataclass(frozen=True)
class ChainReport:
    """``intact``, or the first bad record and what is wrong with it."""

    intact: bool
    records: int
    bad_seq: int | None = None
    bad_offset: int | None = None
    problem: str = ""

    def describe(self) -> str:
        if self.intact:
            return f"intact ({self.records} records)"
        where = f"record seq {self.bad_seq}" + (f" at offset {self.bad_offset}" if self.bad_offset is not None else "")
        return f"broken at {where}: {self.problem}"


def verify_chain(records: list[tuple[int | None, AuditRecord]], verifier: Verifier | None = None) -> ChainReport:
    """Check a task's records (with their log offsets): hashes, links and sequence numbers, and with a
    ``verifier`` each record's signature: valid, by a trusted key, and by a signer that may record
    what its ``actor`` did (``handrail.signing.audit_signers``: no agent signs any record).

    The chain's order is its links, not the log's: two services appending to one task at once
    (a worker's step and the circuit-breaker's halt) are chained in Redis one after the other,
    but their publishes may land in either order. So records are checked in ``seq`` order; a
    missing record leaves a gap, a changed one fails its hash, a moved one its link. Delivery is
    at least once: a record published again (same message id and hash) is the same record. A
    different record with a seq already taken is a fork, and breaks the chain.

    A join of a parallel step's branches (``branches.joined``) must name as its parents the head each
    branch reached (the output of its last step record before the join), and its input must be the
    ``join_hash`` of those parents.
    """
    prev = GENESIS
    seen: set[tuple[str, str]] = set()
    unique: list[tuple[int | None, AuditRecord]] = []
    for offset, record in records:
        identity = (record.message_id, record.record_hash)
        if identity not in seen:
            seen.add(identity)
            unique.append((offset, record))
    records = sorted(unique, key=lambda item: item[1].seq)  # stable: a fork keeps its log order
    branch_heads: dict[str, str] = {}  # hop -> the output of its latest step record
    for expected_seq, (offset, record) in enumerate(records, start=1):
        if record.computed_hash() != record.record_hash:
            return ChainReport(False, len(records), record.seq, offset, "its content does not match its record_hash")
        if record.seq != expected_seq:
            return ChainReport(
                False,
                len(records),
                record.seq,
                offset,
                f"expected seq {expected_seq}: a record before it is missing or the order changed",
            )
        if record.prev_hash != prev:
            return ChainReport(
                False, len(records), record.seq, offset, "its prev_hash is not the previous record's hash"
            )
        if record.action.startswith("step.") and record.step and record.output_hash:
            branch_heads[record.step] = record.output_hash
        if record.action == "branches.joined" and (problem := _join_problem(record, branch_heads)) is not None:
            return ChainReport(False, len(records), record.seq, offset, problem)
        if verifier is not None:
            try:
                verifier.verify(record, expected=audit_signers(record.actor), task_id=record.task_id)
            except SignatureRejected as exc:
                return ChainReport(False, len(records), record.seq, offset, f"{exc.error_type}: {exc}")
        prev = record.record_hash
    return ChainReport(True, len(records))


def _join_problem(record: AuditRecord, branch_heads: dict[str, str]) -> str | None:
    """What is wrong with a join's parents, if anything (see ``verify_chain``)."""
    parents = record.details.get("parents")
    if not isinstance(parents, dict) or not parents:
        return "a join that names no parents"
    for branch, head in sorted(parents.items()):
        reached = branch_heads.get(f"{record.step}.{branch}")
        if reached != head:
            return f"the join names {str(head)[:12]} as branch {branch!r}'s head, which reached {str(reached)[:12]}"
    if record.input_hash != join_hash(parents):
        return "the join's input is not the join_hash of its parents"
    return None
