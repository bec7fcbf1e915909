"""Context hashes: sha256 over the RFC 8785 (JCS) canonical JSON of a value.

Canonical JSON makes the hash independent of key order, whitespace and number
formatting, so a producer in any language computes the same digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from handrail.errors import NotCanonical

#: The hash of "no parent": recorded before a task's first hop.
GENESIS = "0" * 64


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical JSON encoding of ``value``; ``NotCanonical`` when it has none."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise NotCanonical(f"a number has no RFC 8785 encoding (NaN, infinity or |n| > 2^53): {exc}") from None


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def context_hash(context: Any) -> str:
    """Return the hash carried as ``context_hash``: sha256 hex of the canonical JSON."""
    return sha256_hex(canonical_json(context))
