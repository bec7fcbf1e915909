"""Router settings (``HANDRAIL_*``)."""

from __future__ import annotations

from pydantic import Field

from handrail.service import ServiceSettings


class RouterSettings(ServiceSettings):
    """What the router needs beyond the shared settings."""

    http_port: int = Field(default=8081, ge=0, le=65535)
    #: 256 KiB: a task is instructions and references, not documents; Kafka's default message limit is 1 MiB.
    max_task_bytes: int = Field(default=256 * 1024, gt=0)
    default_deadline_s: float = Field(default=600.0, gt=0, description="Used when a task sets no deadline_s.")
    #: 30 s: room for one failover on a cheap model, well inside Kafka's 5-minute poll interval; a task
    #: whose classifier takes longer goes the configured safe way (default workflow or review).
    classify_timeout_s: float = Field(default=30.0, gt=0, description="Longest wait for the routing classifier.")
