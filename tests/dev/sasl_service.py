"""Run a Handrail service as its own SASL/SCRAM principal: ``python tests/dev/sasl_service.py MODULE [ARGS...]``.

The services cannot take Kafka credentials yet, so this injects the proposed
``make_broker(..., security=...)`` (see the integration notes) before the service
starts; the credentials come from ``HANDRAIL_KAFKA_USERNAME`` / ``HANDRAIL_KAFKA_PASSWORD``.
Delete it once ``handrail.bus.broker.make_broker`` takes the service's credentials.
"""

from __future__ import annotations

import os
import runpy
import sys

from faststream.kafka import KafkaBroker

import handrail.service.runtime as runtime
from handrail.deploy.kafka_security import credentials_from_settings


def make_broker(bootstrap: str, client_id: str) -> KafkaBroker:
    """``handrail.bus.broker.make_broker`` with the service's SASL credentials."""
    credentials = credentials_from_settings(
        "SASL_PLAINTEXT", "SCRAM-SHA-512", os.environ["HANDRAIL_KAFKA_USERNAME"], os.environ["HANDRAIL_KAFKA_PASSWORD"]
    )
    assert credentials is not None
    return KafkaBroker(
        bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        allow_auto_create_topics=False,
        logger=None,
        security=credentials.faststream_security(),
    )


if __name__ == "__main__":
    runtime.make_broker = make_broker  # type: ignore[assignment]
    module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
