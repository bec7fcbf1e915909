"""Signing keys for a local stack: one Ed25519 key per signer, kept in the run dir.

Every service signs what it hands on and verifies what it takes on, so every
local stack (``make up``, ``make demo``, the test stacks, the chaos soak, the
benchmarks) runs signed: the launcher gives each process its own key
(``HANDRAIL_SIGNING_KEY_FILE``) and the folder of every signer's public key as
its trust store (``HANDRAIL_TRUSTED_KEYS_FILE``). Keys are made once and reused,
so a restarted process keeps its identity; delete the folder to get new ones.
A caller that sets either variable itself (a test of the keys) is left alone.
In docker-compose the same folder lives in a volume; in Kubernetes each key is
a Secret and the public keys a ConfigMap (``k8s/README.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from handrail.signing import SigningKey

FOLDER = "keys"
_KEY_VARIABLES = ("HANDRAIL_SIGNING_KEY", "HANDRAIL_SIGNING_KEY_FILE")
_TRUST_VARIABLES = ("HANDRAIL_TRUSTED_KEYS", "HANDRAIL_TRUSTED_KEYS_FILE")


def ensure_keys(run_dir: Path, signers: Iterable[str]) -> Path:
    """The stack's key folder, with a key for each of ``signers`` (made when missing)."""
    folder = run_dir / FOLDER
    for signer in signers:
        if not (folder / f"{signer}.pem").exists():
            SigningKey.generate(signer).save(folder)
    return folder


def signing_env(signer: str, run_dir: Path, given: Mapping[str, str]) -> dict[str, str]:
    """The variables that make ``signer``'s process sign with its own key and trust the stack's keys.

    ``given`` is the environment the process would get otherwise: what it already sets stays.
    """
    folder = ensure_keys(run_dir, [signer])
    env: dict[str, str] = {}
    if not any(given.get(v) for v in _KEY_VARIABLES):
        env["HANDRAIL_SIGNING_KEY_FILE"] = str(folder / f"{signer}.pem")
    if not any(given.get(v) for v in _TRUST_VARIABLES):
        env["HANDRAIL_TRUSTED_KEYS_FILE"] = str(folder)
    return env
