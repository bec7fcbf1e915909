"""Shared base for payloads, and message ids."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

#: Namespace for ids derived from another message's id; fixed forever so that a
#: redelivered input always yields the same output ids (downstream dedupe).
_DERIVED_NS = uuid.UUID("5b0f9d1e-2d6c-4f0a-9a57-3e1f6b7c8d90")
_DERIVED_NS_BYTES = _DERIVED_NS.bytes


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
    """Return a deterministic id for the message ``role`` produced from ``parent_message_id``: the
    RFC 4122 name-based (SHA-1, version 5) UUID of ``<parent>/<role>`` in ``_DERIVED_NS``, exactly as
    ``uuid.uuid5`` makes it, without building a ``UUID`` object (a hop derives dozens of ids)."""
    name = _DERIVED_NS_BYTES + f"{parent_message_id}/{role}".encode()
    digest = bytearray(hashlib.sha1(name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)
