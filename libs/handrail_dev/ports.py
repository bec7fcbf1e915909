"""Where a local stack listens: every server and service at a fixed offset from one base port.

    base + 0    Kafka (its KRaft controller on + 1)
    base + 2    Redis
    base + 10   the services (``handrail_dev.services.plan``): router + 0, validator + 2,
                circuit-breaker + 4, human-review + 5, one worker per agent from + 10

A stack takes :data:`STACK_SPAN` ports, so two stacks whose base ports are that far apart run side
by side. Without a base port a stack listens where the tools expect it by default: Kafka 9092,
Redis 6379, the services from 8081.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Ports one stack may use from its base: the servers, the services, workers for up to 20 agents
#: (+ 20 to + 39), and the chaos soak's second replica of each worker (``tools.chaos``, from + 40).
STACK_SPAN = 50


@dataclass(frozen=True)
class StackPorts:
    """The ports of one local stack."""

    kafka: int
    redis: int
    services: int
    """The first service's port (the router's)."""

    @property
    def controller(self) -> int:
        """The Kafka controller's port: the broker's + 1 (``handrail_dev.kafka``)."""
        return self.kafka + 1

    @classmethod
    def at(cls, base_port: int | None) -> StackPorts:
        """The ports from ``base_port``; None: the well-known defaults."""
        if base_port is None:
            return cls(kafka=9092, redis=6379, services=8081)
        return cls(kafka=base_port, redis=base_port + 2, services=base_port + 10)
