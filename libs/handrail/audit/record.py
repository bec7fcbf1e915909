"""The audit record payload and its hash."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from handrail.hashing import canonical_json, sha256_hex
from handrail.messages.base import Payload


class AuditRecord(Payload):
    """One decision: who, what, why, what it cost; chained to the task's previous record."""

    schema_version: Literal[1] = 1
    message_id: str
    task_id: str
    seq: int = Field(ge=1, description="1 for the task's first record, then +1 each.")
    prev_hash: str = Field(description="record_hash of the task's previous record; 64 zeros for the first.")
    record_hash: str = Field(description="sha256 of the canonical JSON of this record without record_hash.")
    source_id: str | None = Field(
        default=None,
        description="The message the decision was taken on: its message id, or a submission's log position.",
    )
    actor: str = Field(description="Who decided: `agent:<name>`, `service:<name>`, `reviewer:<id>`, `operator:<id>`.")
    action: str = Field(description="What was decided, e.g. task.opened, step.completed, tool.call, task.ended.")
    reason: str | None = Field(default=None, description="Why: the rule or reason.")
    workflow: str | None = None
    step: str | None = None
    input_hash: str | None = Field(default=None, description="Context hash before the decision.")
    output_hash: str | None = Field(default=None, description="Context hash after the decision.")
    details: dict[str, Any] = Field(default_factory=dict)
    cost_usd: float = Field(default=0.0, ge=0)
    tokens: int = Field(default=0, ge=0)
    at: datetime
    signature: str | None = Field(
        default=None,
        description="The producing service's Ed25519 signature over the record as published (`v1:<signer>:…`); "
        "not part of record_hash. `handrail audit verify` checks it against the actor.",
    )

    def computed_hash(self) -> str:
        """The hash this record should carry as ``record_hash`` (its signature is not part of it)."""
        body = self.model_dump(mode="json", exclude={"record_hash", "signature"}, exclude_none=True)
        return sha256_hex(canonical_json(body))
