"""The settings every service shares; each service subclasses it once.

Nothing else in Handrail reads the environment. (The OpenTelemetry SDK reads its standard
``OTEL_*`` variables itself; ``TracingSettings`` reads the ones Handrail decides on or checks.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import redis.asyncio as aioredis
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from handrail.bus.security import SaslCredentials, credentials_from_settings
from handrail.errors import ContractError
from handrail.observability.export import TracingConfig
from handrail.state.client import connect_redis


class KafkaSettings(BaseSettings):
    """Where Kafka is and who this process is to it: every service, the CLI and the client tools read these."""

    model_config = SettingsConfigDict(env_prefix="HANDRAIL_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    #: PLAINTEXT on a laptop; SASL_PLAINTEXT / SASL_SSL where each service and agent is its own principal.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None

    def kafka_credentials(self) -> SaslCredentials | None:
        """The SASL credentials these settings describe; None for ``PLAINTEXT``."""
        password = self.kafka_password.get_secret_value() if self.kafka_password else None
        return credentials_from_settings(
            self.kafka_security_protocol,
            self.kafka_sasl_mechanism,
            self.kafka_username,
            password,
            self.kafka_ssl_cafile,
        )


class RedisSettings(BaseSettings):
    """Where Redis is and who this process is to it: every service and the CLI read these."""

    model_config = SettingsConfigDict(env_prefix="HANDRAIL_", frozen=True, extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "hr:"
    #: This process's Redis ACL user (``handrail.state.acl``); or put user and password in the URL.
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    #: The password from a file (a mounted secret) instead of the environment.
    redis_password_file: Path | None = None

    def redis_client(self) -> aioredis.Redis:
        """A pooled client logged in as this process's user (the URL's, when the settings name none)."""
        password = self.redis_password.get_secret_value() if self.redis_password else None
        if self.redis_password_file is not None:
            try:
                password = self.redis_password_file.read_text().strip()
            except OSError as exc:
                raise ContractError(
                    f"cannot read HANDRAIL_REDIS_PASSWORD_FILE {self.redis_password_file}: {exc.strerror}"
                ) from None
        return connect_redis(self.redis_url, username=self.redis_username, password=password)


class TracingSettings(BaseSettings):
    """Where spans go: ``HANDRAIL_OTEL_EXPORTER`` when set, else the standard OpenTelemetry variables.

    The standard ones are read under their own names; ``handrail.observability.export`` has the rules.
    """

    model_config = SettingsConfigDict(env_prefix="HANDRAIL_", frozen=True, extra="ignore")

    #: Unset: the standard variables decide (``none`` unless they ask for an exporter or name an endpoint).
    otel_exporter: str | None = Field(default=None, description="off, none, console, otlp-http, otlp-grpc, file:<path>")
    #: The collector's base URL for ``otlp-http`` / ``otlp-grpc``; unset: the standard endpoint variables'.
    otel_endpoint: str | None = None
    traces_exporter: str | None = Field(default=None, validation_alias="OTEL_TRACES_EXPORTER")
    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otlp_traces_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    otlp_protocol: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_PROTOCOL")
    otlp_traces_protocol: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    #: Read only to be checked: the exporter reads its headers itself.
    otlp_headers: SecretStr | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_HEADERS")
    otlp_traces_headers: SecretStr | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_HEADERS")
    service_name: str | None = Field(default=None, validation_alias="OTEL_SERVICE_NAME")
    resource_attributes: str | None = Field(default=None, validation_alias="OTEL_RESOURCE_ATTRIBUTES")

    def tracing(self) -> TracingConfig:
        """These settings for ``setup_tracing``; an empty value counts as unset, as it does for the SDK."""
        standard: dict[str, str] = {}
        for name, info in TracingSettings.model_fields.items():
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if isinstance(info.validation_alias, str) and text and text.strip():
                standard[info.validation_alias] = text
        return TracingConfig(self.otel_exporter or None, self.otel_endpoint or None, standard)


class ServiceSettings(KafkaSettings, RedisSettings, TracingSettings):
    """Where the bus, the state and the contracts are; read from ``HANDRAIL_*``."""

    topic_prefix: str = "handrail."
    #: Consumer groups are ``<group_prefix><role>`` (router, validator, agent-<name>, ...): also the principals' names.
    group_prefix: str = "handrail-"
    config_dir: Path = Path("config")
    data_dir: Path = Field(default=Path(".run/data"), description="Where local tools keep their files.")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    retry_backoff_s: float = Field(default=1.0, gt=0, description="Wait before redelivering after a retryable error.")
    #: Messages one consumer runs at once (many tasks, each task's in order); fetching pauses at the cap.
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    #: On SIGTERM or a rebalance, how long running messages may take to finish before they are left
    #: to be redelivered; below the pod's termination grace period (30 s by default in Kubernetes).
    shutdown_grace_s: float = Field(default=20.0, gt=0)
    #: A message that fails this many times in a row (not counting Redis or Kafka being down) is
    #: dead-lettered as ``poison`` instead of tried forever.
    poison_after_attempts: int = Field(default=5, ge=1)
    #: When Redis has lost its state, the rebuild first waits this long for audit records sealed just
    #: before the loss to reach the broker (a publish is acknowledged within milliseconds when Kafka
    #: is healthy), so the chain continues after them.
    state_rebuild_settle_s: float = Field(default=3.0, ge=0)
    #: The rebuild lock expires after this long unless renewed: a process that dies while rebuilding
    #: holds up the others no longer than this.
    state_rebuild_lock_ttl_s: float = Field(default=30.0, gt=0)
    #: How often each service looks for the state generation marker.
    state_poll_s: float = Field(default=0.5, gt=0)
    log_level: str = "INFO"
    #: Who this process signs envelopes as: the service's name, or a worker's agent (the default).
    signer: str | None = None
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    #: Public keys of the signers this process trusts: JSON/YAML {signer: [base64 key, ...]}, or a file/folder.
    trusted_keys: str | None = None
    trusted_keys_file: Path | None = None
    #: Every hop must be signed by the sender the workflow expects, and this process signs what it
    #: sends. On by default; ``false`` (logged as a warning at start) only while a fleet rolls
    #: signing out: unsigned envelopes then pass, signed ones are still verified in full.
    signing_required: bool = True
    #: The audit trail is the record; off only to measure what it costs (bench/pipeline.py).
    audit_enabled: bool = True

    def group(self, role: str) -> str:
        """The consumer group of this process's ``role``."""
        return f"{self.group_prefix}{role}"
