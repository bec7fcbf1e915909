"""Signing and verifying bus messages with Ed25519.

What is signed, in any language: the message as published (a JSON object),
without its ``signature`` member, encoded as RFC 8785 canonical JSON, after the
ASCII prefix ``handrail-signature-v1\\n`` (domain separation: a Handrail
signature can never be replayed as a signature over anything else).

The ``signature`` member reads ``v1:<signer>:<key id>:<base64url signature>``;
the key id (:func:`handrail.signing.keys.key_id`) tells the receiver which of the
signer's (at most two) trusted keys to use, so keys rotate without a gap.

Receivers verify the bytes they consumed, not a re-serialisation of the model,
so a sender in another language only needs RFC 8785 and Ed25519.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from cryptography.exceptions import InvalidSignature
from pydantic import BaseModel

from handrail import jsontext
from handrail.hashing import canonical_json
from handrail.signing.errors import SignatureInvalid, SignatureMissing, UnknownSigner, WrongSigner
from handrail.signing.keys import SIGNER_PATTERN, SigningKey, TrustStore

#: The member of a message that carries its signature; it is left out of what is signed.
SIGNATURE_FIELD = "signature"
#: Prefixed to the canonical JSON before signing (see the module docstring).
DOMAIN = b"handrail-signature-v1\n"
_VERSION = "v1"

M = TypeVar("M", bound=BaseModel)


def signing_bytes(document: Mapping[str, Any]) -> bytes:
    """The exact bytes a signature covers: the domain prefix, then the canonical JSON without ``signature``."""
    return DOMAIN + canonical_json({k: v for k, v in document.items() if k != SIGNATURE_FIELD})


@dataclass(frozen=True)
class ParsedSignature:
    """The parts of a ``signature`` member."""

    signer: str
    key_id: str
    signature: bytes

    @classmethod
    def parse(cls, text: str, task_id: str | None = None) -> ParsedSignature:
        """Split ``v1:<signer>:<key id>:<signature>``; raise SignatureInvalid when it is malformed."""
        parts = text.split(":")
        if len(parts) != 4 or parts[0] != _VERSION or not SIGNER_PATTERN.match(parts[1]) or not parts[2]:
            raise SignatureInvalid(
                f"malformed signature {text[:80]!r}: expected 'v1:<signer>:<key id>:<signature>'", task_id=task_id
            )
        try:
            raw = base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4))
        except (binascii.Error, ValueError):
            raise SignatureInvalid("malformed signature: its last part is not base64url", task_id=task_id) from None
        if len(raw) != 64:
            raise SignatureInvalid(f"malformed signature: {len(raw)} bytes, Ed25519 has 64", task_id=task_id)
        return cls(parts[1], parts[2], raw)

    def format(self) -> str:
        encoded = base64.urlsafe_b64encode(self.signature).decode().rstrip("=")
        return f"{_VERSION}:{self.signer}:{self.key_id}:{encoded}"


class Signer:
    """Signs the messages one party publishes, with its current key."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key

    @property
    def name(self) -> str:
        return self.key.signer

    def signature_for(self, document: Mapping[str, Any]) -> str:
        """The ``signature`` member for ``document`` (a JSON object as published)."""
        raw = self.key.private_key.sign(signing_bytes(document))
        return ParsedSignature(self.key.signer, self.key.key_id, raw).format()

    def sign(self, payload: M) -> M:
        """A copy of ``payload`` with its ``signature`` set; the payload model must have that field."""
        _check_signable(payload)
        document = jsontext.loads(_published_bytes(payload))
        return payload.model_copy(update={SIGNATURE_FIELD: self.signature_for(document)})

    def signed_bytes(self, payload: BaseModel) -> bytes:
        """``payload`` as published, with its ``signature`` member: what ``sign(payload).to_bytes()`` says,
        serialised once (the member comes last; a receiver reads the object, whatever its order)."""
        _check_signable(payload)
        unsigned = payload.model_dump_json(exclude_none=True, exclude={SIGNATURE_FIELD}).encode()
        member = b'"' + SIGNATURE_FIELD.encode() + b'":' + orjson.dumps(self.signature_for(jsontext.loads(unsigned)))
        return unsigned[:-1] + (b"," if unsigned != b"{}" else b"") + member + b"}"


class Verifier:
    """Checks signatures against a trust store."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust

    def verify_document(self, document: Mapping[str, Any], *, task_id: str | None = None) -> str:
        """Verify ``document``'s signature and return the signer's name."""
        text = document.get(SIGNATURE_FIELD)
        if not text:
            raise SignatureMissing("the message is not signed, and signatures are required", task_id=task_id)
        if not isinstance(text, str):
            raise SignatureInvalid("malformed signature: not a string", task_id=task_id)
        parsed = ParsedSignature.parse(text, task_id)
        keys = self.trust.keys_for(parsed.signer)
        if not keys:
            raise UnknownSigner(f"signed by {parsed.signer!r}, who has no trusted public key", task_id=task_id)
        key = keys.get(parsed.key_id)
        if key is None:
            raise SignatureInvalid(
                f"signed by {parsed.signer!r} with key {parsed.key_id}, which is not one of its trusted keys "
                f"({', '.join(sorted(keys))}): rotated out, or forged",
                task_id=task_id,
            )
        try:
            key.verify(parsed.signature, signing_bytes(document))
        except InvalidSignature:
            raise SignatureInvalid(
                f"the signature of {parsed.signer!r} (key {parsed.key_id}) does not match the message: "
                "it was altered after signing, or forged",
                task_id=task_id,
            ) from None
        return parsed.signer

    def verify_bytes(
        self, value: bytes, *, expected: Collection[str], claimed: str | None = None, task_id: str | None = None
    ) -> str:
        """Verify the consumed bytes ``value``; the signer must be in ``expected`` (and equal ``claimed``).

        ``claimed`` is who the message says it comes from (``sender``, ``agent``);
        a valid signature by anybody else is a ``WrongSigner``.
        """
        try:
            document = jsontext.loads(value)
        except ValueError:
            raise SignatureInvalid("cannot verify: the message is not JSON", task_id=task_id) from None
        if not isinstance(document, dict):
            raise SignatureInvalid("cannot verify: the message is not a JSON object", task_id=task_id)
        signer = self.verify_document(document, task_id=task_id)
        if claimed is not None and signer != claimed:
            raise WrongSigner(f"signed by {signer!r}, but the message claims to come from {claimed!r}", task_id=task_id)
        if signer not in expected:
            raise WrongSigner(
                f"signed by {signer!r}, but only {', '.join(repr(e) for e in sorted(expected))} may send this message",
                task_id=task_id,
            )
        return signer

    def verify(
        self, payload: BaseModel, *, expected: Collection[str], claimed: str | None = None, task_id: str | None = None
    ) -> str:
        """Verify a payload model (re-serialised as published); prefer :meth:`verify_bytes` on consumed bytes."""
        return self.verify_bytes(_published_bytes(payload), expected=expected, claimed=claimed, task_id=task_id)


def _check_signable(payload: BaseModel) -> None:
    if SIGNATURE_FIELD not in type(payload).model_fields:
        raise TypeError(f"{type(payload).__name__} has no {SIGNATURE_FIELD!r} field to carry a signature")


def _published_bytes(payload: BaseModel) -> bytes:
    to_bytes = getattr(payload, "to_bytes", None)  # handrail.messages.Payload: the form put on the bus
    if callable(to_bytes):
        data = to_bytes()
        if isinstance(data, bytes):
            return data
    return payload.model_dump_json(exclude_none=True).encode()
