"""Shared base for payloads, and message ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

#: Namespace for ids derived from another message's id; fixed forever so that a
#: redelivered input always yields the same output ids (downstream dedupe).
_DERIVED_NS = uuid.UUID("5b0f9d1e-2d6c-4f0a-9a57-3e1f6b7c8d90")


class Payload(BaseModel):
    """Base of every message on the bus: strict about unknown fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_bytes(self) -> bytes:
        """Serialise as compact JSON, the form published on the bus."""
        return self.model_dump_json(exclude_none=True).encode()


def new_message_id() -> str:
    """Return a fresh random message id."""
    return str(uuid.uuid4())


def derived_message_id(parent_message_id: str, role: str) -> str:
    """Return a deterministic id for the message ``role`` produced from ``parent_message_id``."""
    return str(uuid.uuid5(_DERIVED_NS, f"{parent_message_id}/{role}"))


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)
