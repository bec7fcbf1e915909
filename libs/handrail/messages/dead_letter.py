"""A message that cannot be processed, parked on ``<prefix>dlq`` with its reason."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from handrail.messages.base import Payload


class DeadLetter(Payload):
    """The original bytes of an unprocessable message, where they came from, and why."""

    schema_version: Literal[1] = 1
    message_id: str
    reason: str = Field(description="What is wrong, for a person.")
    error_type: str = Field(description="What is wrong, for a machine.")
    source_topic: str
    partition: int
    offset: int
    original: str = Field(description="The original message bytes, base64 (the first 512 KiB of a larger one).")
    original_size: int | None = Field(default=None, description="How many bytes the original message had.")
    original_sha256: str | None = Field(default=None, description="sha256 hex of the whole original message.")
    original_truncated: bool | None = Field(default=None, description="True when `original` holds only a prefix.")
    task_id: str | None = None
    service: str = Field(description="The service that dead-lettered it.")
    dead_lettered_at: datetime
