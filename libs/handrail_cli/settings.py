"""CLI settings (``HANDRAIL_*``); command-line options override them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from handrail.service.settings import KafkaSettings, RedisSettings
from handrail.signing import OPERATOR, Signer, TrustStore, Verifier, load_signing_key


class CliSettings(KafkaSettings, RedisSettings):
    """Where the CLI finds the bus and the state (and who it is there), and the contracts."""

    topic_prefix: str = "handrail."
    config_dir: Path = Path("config")
    #: Who the CLI signs operators' audit records as (halts, autonomy changes).
    signer: str = OPERATOR
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    #: The public keys ``audit verify`` checks signatures with: JSON/YAML, or a folder of ``<signer>.pub``.
    trusted_keys: str | None = None
    trusted_keys_file: Path | None = None
    #: ``audit verify`` checks every record's signature (``false``: the hash chain alone).
    signing_required: bool = True
    #: How long ``topics ensure`` has a new steps topic keep step reports: their recordings (``replay``)
    #: and the checkpoints tasks resume and fork from.
    steps_retention_days: float = Field(default=7, gt=0)

    def operator_signer(self) -> Signer | None:
        """The key operators' records are signed with: the configured one, else the local stack's."""
        if self.signing_key is not None or self.signing_key_file is not None:
            return Signer(load_signing_key(self.signer, key=self.signing_key, key_file=self.signing_key_file))
        local = _local_keys() / f"{self.signer}.pem"
        return Signer(load_signing_key(self.signer, key_file=local)) if local.exists() else None

    def audit_verifier(self) -> Verifier | None:
        """What checks audit signatures: the configured trust store, else the local stack's keys."""
        if self.trusted_keys_file is not None:
            return Verifier(TrustStore.from_file(self.trusted_keys_file))
        if self.trusted_keys is not None:
            return Verifier(TrustStore.from_text(self.trusted_keys))
        local = _local_keys()
        return Verifier(TrustStore.from_file(local)) if local.is_dir() else None


def _local_keys() -> Path:
    """The key folder of the local stack ``make up`` runs (``handrail_dev.signing_keys``)."""
    from handrail_dev.settings import DevSettings
    from handrail_dev.signing_keys import FOLDER

    return DevSettings().run_dir / FOLDER
