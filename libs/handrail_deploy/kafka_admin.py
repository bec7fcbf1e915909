"""Applying ACLs to a running Kafka over its admin protocol (SASL/SCRAM), with aiokafka.

aiokafka's admin client has no ACL methods, but it ships the ``CreateAcls``
request (Kafka API 30, v0-v1; Kafka 4.x serves v1+), sent here one ACL per request.
Creating an ACL that already exists succeeds, so applying is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from handrail.bus.acl import AclBinding, Operation, PatternType, ResourceType
from handrail.bus.broker import make_admin
from handrail.bus.security import SaslCredentials
from handrail.errors import KafkaAdminError

#: Kafka's wire codes (``org.apache.kafka.common.acl`` / ``resource`` enums).
_RESOURCE_CODES = {ResourceType.TOPIC: 2, ResourceType.GROUP: 3}
_PATTERN_CODES = {PatternType.LITERAL: 3, PatternType.PREFIXED: 4}
_OPERATION_CODES = {
    Operation.READ: 3,
    Operation.WRITE: 4,
    Operation.CREATE: 5,
    Operation.DESCRIBE: 8,
    Operation.DESCRIBE_CONFIGS: 10,
}
_ALLOW = 3


async def apply_acls(bootstrap: str, admin: SaslCredentials, rules: Iterable[AclBinding]) -> int:
    """Create every ACL in ``rules`` as ``admin``; return how many were sent."""
    client = make_admin(bootstrap, "handrail-acls", admin)
    await client.start()
    try:
        count = 0
        for rule in rules:
            request = CreateAclsRequest(
                _RESOURCE_CODES[rule.resource_type],
                rule.resource_name,
                _PATTERN_CODES[rule.pattern_type],
                rule.kafka_principal,
                "*",
                _OPERATION_CODES[rule.operation],
                _ALLOW,
            )
            response = await client._send_request(request)  # no public ACL API in aiokafka
            for code, message in response.creation_responses:
                if code != 0:
                    raise KafkaAdminError(f"Kafka refused ACL {rule}: {for_code(code).__name__}: {message or ''}")
            count += 1
        return count
    finally:
        await client.close()
