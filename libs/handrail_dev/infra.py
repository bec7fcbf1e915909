"""``up`` / ``down`` / ``status`` for the whole dev infrastructure (Kafka and Redis)."""

from __future__ import annotations

from dataclasses import dataclass

from handrail_dev.kafka import kafka_status, start_kafka, stop_kafka
from handrail_dev.process import run_dir_lock
from handrail_dev.redis import redis_status, start_redis, stop_redis
from handrail_dev.settings import DevSettings
from handrail_dev.state import ServiceStatus


@dataclass(frozen=True)
class InfraStatus:
    """The state of Kafka and Redis after a launcher call."""

    kafka: ServiceStatus
    redis: ServiceStatus

    @property
    def services(self) -> tuple[ServiceStatus, ServiceStatus]:
        """Kafka, then Redis."""
        return (self.kafka, self.redis)


def up(settings: DevSettings) -> InfraStatus:
    """Make Kafka and Redis answer at the configured addresses; idempotent.

    A server that already answers is used as is (``external``); otherwise it is started
    detached, so it outlives the caller, and this returns once it is really ready.
    """
    with run_dir_lock(settings.run_dir):
        redis = start_redis(settings)  # first: it is ready in milliseconds, Kafka takes seconds
        kafka = start_kafka(settings)
    return InfraStatus(kafka=kafka, redis=redis)


def down(settings: DevSettings) -> InfraStatus:
    """Stop the servers ``up`` started (by pid file); external servers are left alone."""
    with run_dir_lock(settings.run_dir):
        kafka = stop_kafka(settings)
        redis = stop_redis(settings)
    return InfraStatus(kafka=kafka, redis=redis)


def status(settings: DevSettings) -> InfraStatus:
    """For each server: ``running`` (started by ``up``, with its pid), ``external`` or ``stopped``."""
    return InfraStatus(kafka=kafka_status(settings), redis=redis_status(settings))
