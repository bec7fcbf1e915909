"""``AutonomyChanged``: one change of an (agent, workflow)'s autonomy level, on the compacted control topic.

Keyed ``autonomy/<agent>/<workflow>``, so compaction keeps the latest word on
each. Readers of the control topic that expect a ``ControlRecord`` (halts,
breakers) skip it: its ``kind`` is ``autonomy``, which no ``ControlRecord`` has.
``level`` null means the override was cleared: the config's level applies again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from handrail.contracts.agents import Autonomy
from handrail.messages.base import Payload

#: Where an (agent, workflow)'s changes are kept: the control topic's key and the audit chain's id.
KEY_PREFIX = "autonomy/"


def autonomy_key(agent: str, workflow: str) -> str:
    """``autonomy/<agent>/<workflow>``."""
    return f"{KEY_PREFIX}{agent}/{workflow}"


class AutonomyChanged(Payload):
    """The latest word on one (agent, workflow)'s autonomy level: an override, or back to the config's."""

    schema_version: Literal[1] = 1
    message_id: str
    kind: Literal["autonomy"] = "autonomy"
    agent: str
    workflow: str
    level: Autonomy | None = Field(
        default=None, description="The level from now on; null or absent: the config's again."
    )
    previous: Autonomy = Field(description="The effective level before this change.")
    configured: Autonomy = Field(description="The config's level (agents.yaml) when the change was made.")
    revision: int = Field(ge=1, description="1 for the first change of this (agent, workflow), then +1 each.")
    reason: str = Field(min_length=1)
    by: str = Field(description="`operator:<user>`, or `service:human-review` when the rule applied it (auto).")
    auto: bool = Field(default=False, description="Applied by the graduation rule, not by a person.")
    evidence: dict[str, Any] | None = Field(
        default=None, description="What the rule counted (reviews and outcome ratios), when it applied the change."
    )
    at: datetime

    @property
    def key(self) -> str:
        return autonomy_key(self.agent, self.workflow)

    @property
    def order(self) -> str:
        """Sorts like the changes happened: revision, then time, then id (the newest is the largest)."""
        return f"{self.revision:012d}:{int(self.at.timestamp() * 1000):015d}:{self.message_id}"
