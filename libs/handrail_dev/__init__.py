"""Local development infrastructure: a real Kafka (from Maven Central jars) and Redis.

``up`` starts what is missing as detached processes under ``<run_dir>``, ``down`` stops
only what ``up`` started, ``status`` says who runs what. The CLI is ``handrail dev``.
"""

from handrail_dev.errors import (
    DevInfraError,
    KafkaJarsError,
    PortConflictError,
    ServiceStartError,
    ServiceStopError,
    ToolNotFoundError,
)
from handrail_dev.infra import InfraStatus, down, status, up
from handrail_dev.kafka import kafka_answers, kafka_answers_async, start_kafka
from handrail_dev.redis import redis_answers, start_redis
from handrail_dev.settings import DevSettings
from handrail_dev.state import ServiceState, ServiceStatus

__all__ = [
    "DevInfraError",
    "DevSettings",
    "InfraStatus",
    "KafkaJarsError",
    "PortConflictError",
    "ServiceStartError",
    "ServiceState",
    "ServiceStatus",
    "ServiceStopError",
    "ToolNotFoundError",
    "down",
    "kafka_answers",
    "kafka_answers_async",
    "redis_answers",
    "start_kafka",
    "start_redis",
    "status",
    "up",
]
