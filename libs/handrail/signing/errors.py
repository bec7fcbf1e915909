"""Why an envelope's signature was refused, and why key material could not be loaded.

A refused signature is a handoff failure: the message is dead-lettered with the
``error_type`` below and never processed.

    HandoffError (handrail.errors)     an envelope failed verification
    └── SignatureRejected              the signature does not prove who sent the message
        ├── SignatureMissing           no ``signature`` at all, while signatures are required
        ├── SignatureInvalid           malformed, made with an untrusted key, or not over these bytes
        │   └── UnknownSigner          the signature names a signer the trust store does not know
        └── WrongSigner                a valid signature, but not by whom the workflow expects here
    ContractError (handrail.errors)
    └── KeyMaterialError               a private key or the trust store cannot be loaded -> stop at start-up
"""

from __future__ import annotations

from handrail.errors import ContractError, HandoffError


class SignatureRejected(HandoffError):
    """The message's signature does not prove that the expected party sent these exact bytes."""

    error_type = "signature_rejected"


class SignatureMissing(SignatureRejected):
    """The message carries no signature, and this receiver requires one."""

    error_type = "signature_missing"


class SignatureInvalid(SignatureRejected):
    """The signature is malformed, was made with a key that is not trusted, or does not match the bytes."""

    error_type = "signature_invalid"


class UnknownSigner(SignatureInvalid):
    """The signature names a signer that has no public key in the trust store."""

    error_type = "unknown_signer"


class WrongSigner(SignatureRejected):
    """The signature is valid, but the signer is not the one the workflow expects at this step."""

    error_type = "wrong_signer"


class KeyMaterialError(ContractError):
    """A signing key or the trust store is missing or malformed; raised at start-up, naming the source."""


class KeyFileExists(KeyMaterialError):
    """A key file is already there: keys are never overwritten (rotating keeps the old one trusted)."""
