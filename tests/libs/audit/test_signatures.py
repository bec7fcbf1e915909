"""Signed audit records: `verify_chain` with a verifier names a record no trusted signer may have written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from handrail.audit import AuditRecord, verify_chain
from handrail.hashing import GENESIS
from handrail.signing import Signer, SigningKey, TrustStore, Verifier, audit_signers

SIGNERS = ["router", "validator", "human-review", "circuit-breaker", "operator", "expense-intake", "expense-approver"]
KEYS = {name: SigningKey.generate(name) for name in SIGNERS}
VERIFIER = Verifier(TrustStore({name: [key.public_key] for name, key in KEYS.items()}))

#: (actor, who appends it) along one task, as the services write them.
TRAIL = [
    ("service:router", "router"),
    ("agent:expense-intake", "validator"),  # step.completed, recorded by the validator
    ("service:circuit-breaker", "circuit-breaker"),
    ("reviewer:dan", "human-review"),
    ("operator:ops", "operator"),
    ("service:validator", "validator"),
]


def seal(seq: int, prev: str, actor: str, action: str = "decided") -> AuditRecord:
    draft = AuditRecord(
        message_id=f"m{seq}", task_id="t1", seq=seq, prev_hash=prev, record_hash=GENESIS,
        actor=actor, action=action, at=datetime(2026, 12, 3, tzinfo=UTC),
    )  # fmt: skip
    return draft.model_copy(update={"record_hash": draft.computed_hash()})


def chain(trail: list[tuple[str, str]]) -> list[AuditRecord]:
    records, prev = [], GENESIS
    for seq, (actor, signer) in enumerate(trail, start=1):
        record = Signer(KEYS[signer]).sign(seal(seq, prev, actor))
        records.append(record)
        prev = record.record_hash
    return records


def offsets(records: list[AuditRecord]) -> list[tuple[int | None, AuditRecord]]:
    return list(enumerate(records))  # type: ignore[arg-type]


def test_a_trail_signed_by_those_who_wrote_it_is_intact() -> None:
    records = chain(TRAIL)
    report = verify_chain(offsets(records), VERIFIER)
    assert report.intact and report.records == len(TRAIL)
    # the signature is not part of the record's hash: the chain alone still checks without keys
    assert verify_chain(offsets(records)).intact


def test_an_agent_cannot_write_or_rewrite_anyone_elses_record() -> None:
    records = chain(TRAIL)
    # The agent rewrites the validator's last record (a new reason, a new hash) and signs it itself.
    victim = records[-1].model_copy(update={"reason": "all fine", "signature": None})
    victim = victim.model_copy(update={"record_hash": victim.computed_hash()})
    records[-1] = Signer(KEYS["expense-intake"]).sign(victim)
    report = verify_chain(offsets(records), VERIFIER)
    assert not report.intact and report.bad_seq == len(TRAIL)
    assert report.problem.startswith("wrong_signer") and "'expense-intake'" in report.problem
    # No agent may sign a step record, not even of its own steps, nor a reviewer's or operator's decision.
    assert "expense-intake" not in audit_signers("agent:expense-intake")
    assert "expense-intake" not in audit_signers("agent:expense-approver")
    assert audit_signers("reviewer:dan") == {"human-review"}
    assert "expense-intake" not in audit_signers("operator:ops")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("unsigned", "signature_missing"),
        ("rehashed", "signature_invalid"),  # changed and re-hashed after signing: the hash holds, the signature not
        ("stranger", "unknown_signer"),
    ],
)
def test_an_unsigned_altered_or_untrusted_record_is_named(change: str, problem: str) -> None:
    records = chain(TRAIL)
    third = records[2]
    if change == "unsigned":
        records[2] = third.model_copy(update={"signature": None})
    elif change == "rehashed":
        altered = third.model_copy(update={"tokens": 1})
        records[2] = altered.model_copy(update={"record_hash": altered.computed_hash()})
        later = records[3].model_copy(update={"prev_hash": records[2].record_hash})
        records[3] = later  # the chain stays linked up to the record whose signature breaks
    else:
        unsigned = third.model_copy(update={"signature": None})
        records[2] = Signer(SigningKey.generate("mallory")).sign(unsigned)
    report = verify_chain(offsets(records), VERIFIER)
    assert not report.intact and report.bad_seq == 3 and report.problem.startswith(problem), report.problem
