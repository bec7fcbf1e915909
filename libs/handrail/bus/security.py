"""How a Handrail process authenticates to Kafka: its SASL user, for aiokafka and for FastStream.

Every service and agent connects as its own principal (``handrail acl`` lists them),
over ``SASL_PLAINTEXT`` on a private network or ``SASL_SSL`` with the cluster's CA.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from handrail.errors import ContractError

MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class SaslCredentials:
    """A SASL user, and whether the connection is TLS (``SASL_SSL``) or not (``SASL_PLAINTEXT``)."""

    username: str
    password: str = field(repr=False)
    mechanism: str = "SCRAM-SHA-512"
    security_protocol: str = "SASL_PLAINTEXT"
    #: The CA that signed the brokers' certificates (``SASL_SSL``); None trusts the system's CAs.
    ssl_cafile: Path | None = None

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ContractError(f"Kafka SASL mechanism {self.mechanism!r} is not one of {', '.join(MECHANISMS)}")
        if self.security_protocol not in PROTOCOLS[1:]:
            raise ContractError(
                f"Kafka security protocol {self.security_protocol!r}: expected SASL_PLAINTEXT or SASL_SSL"
            )

    @property
    def use_ssl(self) -> bool:
        return self.security_protocol == "SASL_SSL"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.use_ssl:
            return None
        return ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (producer, consumer, admin)."""
        options: dict[str, Any] = {
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }
        if self.use_ssl:
            options["ssl_context"] = self.ssl_context()
        return options

    def faststream_security(self) -> BaseSecurity:
        """The ``security=`` argument of FastStream's ``KafkaBroker``."""
        kind = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}[self.mechanism]
        return kind(self.username, self.password, ssl_context=self.ssl_context(), use_ssl=self.use_ssl)


def credentials_from_settings(
    protocol: str, mechanism: str, username: str | None, password: str | None, ssl_cafile: Path | None = None
) -> SaslCredentials | None:
    """The credentials a service's settings describe; None for ``PLAINTEXT`` (no authentication)."""
    if protocol == "PLAINTEXT":
        return None
    if not username or not password:
        raise ContractError(
            f"HANDRAIL_KAFKA_SECURITY_PROTOCOL={protocol} needs HANDRAIL_KAFKA_USERNAME and HANDRAIL_KAFKA_PASSWORD"
        )
    return SaslCredentials(username, password, mechanism, protocol, ssl_cafile)
