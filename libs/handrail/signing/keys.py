"""Ed25519 key material: one private key per signer, up to two trusted public keys per signer.

A signer is an agent (``expense-intake``) or a platform service (``router``,
``validator``, ``human-review``). Its private key comes from a PEM file or an
environment secret (PEM, or base64 of the 32-byte seed); everybody else trusts
its public keys through a :class:`TrustStore`.

Rotation: a signer may have two trusted public keys at once. Publish the new
public key next to the old one, switch the signer to the new private key, and
remove the old public key once nothing signed with it is still in flight.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

from handrail.signing.errors import KeyFileExists, KeyMaterialError

#: Signer names end up inside signature strings, separated by ``:``; keep them plain.
SIGNER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: The current key and the next (or previous) one: enough to rotate without a gap, no more.
MAX_KEYS_PER_SIGNER = 2
_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable id of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    """The 32 raw bytes of a public key, base64: the form a trust store file carries."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def check_signer_name(signer: str) -> str:
    """Return ``signer`` if it is a valid signer name, else raise KeyMaterialError."""
    if not SIGNER_PATTERN.match(signer):
        raise KeyMaterialError(f"{signer!r} is not a valid signer name (letters, digits, '.', '_', '-')")
    return signer


@dataclass(frozen=True)
class SigningKey:
    """One signer's private key."""

    signer: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, signer: str) -> SigningKey:
        """A fresh random key for ``signer``."""
        return cls(check_signer_name(signer), Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (store it as a secret)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM."""
        return self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def save(self, folder: Path) -> Path:
        """Write ``<signer>.pem`` (mode 0600, never over an existing one) and append to ``<signer>.pub``.

        The ``.pub`` is appended, so during a rotation it holds the old and the new key: a folder of
        them is a trust store (``TrustStore.from_file``). Returns the private key's path.
        """
        folder.mkdir(parents=True, exist_ok=True)
        private = folder / f"{self.signer}.pem"
        try:
            descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileExists(f"{private} exists; move it away to rotate (keep its .pub trusted)") from None
        with os.fdopen(descriptor, "wb") as out:
            out.write(self.private_pem())
        with (folder / f"{self.signer}.pub").open("ab") as out:
            out.write(self.public_pem())
        return private


def load_signing_key(signer: str, *, key: SecretStr | str | None = None, key_file: Path | None = None) -> SigningKey:
    """``signer``'s private key from ``key`` (PEM or base64 seed, e.g. an env secret) or ``key_file`` (PEM)."""
    check_signer_name(signer)
    if (key is None) == (key_file is None):
        raise KeyMaterialError(f"signer {signer!r}: give exactly one of a signing key or a signing key file")
    if key_file is not None:
        try:
            text = key_file.read_bytes()
        except OSError as exc:
            raise KeyMaterialError(
                f"signer {signer!r}: cannot read signing key file {key_file}: {exc.strerror}"
            ) from None
        source = str(key_file)
    else:
        text = (key.get_secret_value() if isinstance(key, SecretStr) else str(key)).encode()
        source = "the signing key setting"
    return SigningKey(signer, _private_key(text.strip(), f"signer {signer!r}: {source}"))


def _private_key(data: bytes, where: str) -> Ed25519PrivateKey:
    try:
        if data.startswith(b"-----BEGIN"):
            loaded = serialization.load_pem_private_key(data, password=None)
        else:
            seed = base64.b64decode(data, validate=True)
            if len(seed) != 32:
                raise KeyMaterialError(f"{where}: a base64 Ed25519 seed must be 32 bytes, got {len(seed)}")
            loaded = Ed25519PrivateKey.from_private_bytes(seed)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(f"{where}: not an unencrypted Ed25519 private key (PEM or base64 seed): {exc}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyMaterialError(f"{where}: the key is a {type(loaded).__name__}, not an Ed25519 key")
    return loaded


def _public_key(data: bytes, where: str) -> Ed25519PublicKey:
    try:
        if data.startswith(b"-----BEGIN"):
            loaded = serialization.load_pem_public_key(data)
        else:
            loaded = Ed25519PublicKey.from_public_bytes(base64.b64decode(data, validate=True))
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(f"{where}: not an Ed25519 public key (PEM or base64 of 32 bytes): {exc}") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise KeyMaterialError(f"{where}: the key is a {type(loaded).__name__}, not an Ed25519 key")
    return loaded


class TrustStore:
    """The public keys receivers trust, by signer: at most two per signer (rotation)."""

    def __init__(self, keys: Mapping[str, Iterable[Ed25519PublicKey]]) -> None:
        self._keys: dict[str, dict[str, Ed25519PublicKey]] = {}
        for signer, public_keys in keys.items():
            check_signer_name(signer)
            by_id = {key_id(k): k for k in public_keys}
            if not by_id:
                raise KeyMaterialError(f"signer {signer!r}: no public key")
            if len(by_id) > MAX_KEYS_PER_SIGNER:
                raise KeyMaterialError(
                    f"signer {signer!r}: {len(by_id)} public keys; at most {MAX_KEYS_PER_SIGNER} "
                    "(the current one and the next) may be trusted at once"
                )
            self._keys[signer] = by_id

    @property
    def signers(self) -> list[str]:
        return sorted(self._keys)

    def keys_for(self, signer: str) -> Mapping[str, Ed25519PublicKey]:
        """``signer``'s trusted keys by key id (empty when the signer is unknown)."""
        return self._keys.get(signer, {})

    def to_mapping(self) -> dict[str, list[str]]:
        """The trust store as ``{signer: [base64 public key, ...]}``, the file format."""
        return {s: [public_key_b64(k) for k in keys.values()] for s, keys in sorted(self._keys.items())}

    @classmethod
    def from_mapping(cls, raw: Any, where: str = "trust store") -> TrustStore:
        """From ``{signer: [key, ...]}`` (keys PEM or base64), or ``{"signers": {...}}``."""
        if isinstance(raw, Mapping) and set(raw) == {"signers"}:
            raw = raw["signers"]
        if not isinstance(raw, Mapping):
            raise KeyMaterialError(f"{where}: expected a mapping of signer -> list of public keys")
        keys: dict[str, list[Ed25519PublicKey]] = {}
        for signer, values in raw.items():
            entries = [values] if isinstance(values, str) else values
            if not isinstance(entries, list) or not all(isinstance(v, str) for v in entries):
                raise KeyMaterialError(f"{where}: signer {signer!r}: expected a list of public keys")
            keys[str(signer)] = [_public_key(v.strip().encode(), f"{where}: signer {signer!r}") for v in entries]
        return cls(keys)

    @classmethod
    def from_text(cls, text: str, where: str = "trust store") -> TrustStore:
        """From JSON or YAML text (e.g. an environment variable)."""
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise KeyMaterialError(f"{where}: not valid JSON or YAML: {exc}") from None
        return cls.from_mapping(raw, where)

    @classmethod
    def from_file(cls, path: Path) -> TrustStore:
        """From a JSON/YAML file, or from a directory of ``<signer>.pub`` PEM files (one or two keys each)."""
        if path.is_dir():
            keys: dict[str, list[Ed25519PublicKey]] = {}
            for pub in sorted(path.glob("*.pub")):
                blocks = _PEM_PUBLIC.findall(pub.read_bytes())
                if not blocks:
                    raise KeyMaterialError(f"{pub}: no PEM public key in the file")
                keys[pub.name.removesuffix(".pub")] = [_public_key(b, str(pub)) for b in blocks]
            return cls(keys)
        try:
            text = path.read_text()
        except OSError as exc:
            raise KeyMaterialError(f"cannot read trust store {path}: {exc.strerror}") from None
        return cls.from_text(text, str(path))

    def to_json(self) -> str:
        return json.dumps({"signers": self.to_mapping()}, indent=2) + "\n"
