"""Signed envelopes: Ed25519 keys per agent and service, verification, and who may sign what.

Senders call :meth:`Signer.sign` on the payload they are about to publish;
receivers call :class:`HandoffVerifier` on the bytes they consumed. See
:mod:`handrail.signing.signatures` for the exact bytes that are signed.
"""

from handrail.signing.errors import (
    KeyFileExists,
    KeyMaterialError,
    SignatureInvalid,
    SignatureMissing,
    SignatureRejected,
    UnknownSigner,
    WrongSigner,
)
from handrail.signing.keys import MAX_KEYS_PER_SIGNER, SigningKey, TrustStore, key_id, load_signing_key
from handrail.signing.policy import (
    OPERATOR,
    RESERVED_SIGNERS,
    SERVICE_SIGNERS,
    HandoffVerifier,
    audit_signers,
    handoff_senders,
)
from handrail.signing.signatures import DOMAIN, SIGNATURE_FIELD, ParsedSignature, Signer, Verifier, signing_bytes

__all__ = [
    "DOMAIN",
    "MAX_KEYS_PER_SIGNER",
    "OPERATOR",
    "RESERVED_SIGNERS",
    "SERVICE_SIGNERS",
    "SIGNATURE_FIELD",
    "HandoffVerifier",
    "KeyFileExists",
    "KeyMaterialError",
    "ParsedSignature",
    "SignatureInvalid",
    "SignatureMissing",
    "SignatureRejected",
    "Signer",
    "SigningKey",
    "TrustStore",
    "UnknownSigner",
    "Verifier",
    "WrongSigner",
    "audit_signers",
    "handoff_senders",
    "key_id",
    "load_signing_key",
    "signing_bytes",
]
