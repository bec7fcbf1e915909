"""Routing decisions kept in Redis, so a redelivered submission never asks the model again.

A model may answer differently the second time; a task must not. The first
decision for a task is kept with the submission it was made for (the message's
place in the log), under the task's hash tag: ``<p>{task_id}:routing``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from handrail.state.client import unavailable_as_retryable
from handrail.state.tasks import FINISHED_TTL_S
from handrail_router.routing import RouteDecision

#: As long as the task's own records outlive its end: a late redelivery still finds its decision.
DECISION_TTL_S = FINISHED_TTL_S


class _Kept(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    submission: str
    decision: RouteDecision


@dataclass(frozen=True)
class KeptDecision:
    """The decision first made for the task, and the submission it was made for."""

    submission: str
    decision: RouteDecision


class DecisionStore:
    """The first routing decision per task."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, task_id: str) -> str:
        return f"{self._prefix}{{{task_id}}}:routing"

    async def get(self, task_id: str) -> KeptDecision | None:
        """The decision kept for ``task_id``, if any."""
        async with unavailable_as_retryable(f"read the routing decision of task {task_id}"):
            raw = await self._redis.get(self._key(task_id))
        return _parse(raw) if raw is not None else None

    async def keep(self, task_id: str, submission: str, decision: RouteDecision) -> KeptDecision:
        """Keep ``decision`` unless one is already kept; return the one that is."""
        body = _Kept(submission=submission, decision=decision).model_dump_json()
        async with unavailable_as_retryable(f"record the routing decision of task {task_id}"):
            # Not SET NX GET: that needs Redis 7, and the apt Redis of some distributions is 6.
            if await self._redis.set(self._key(task_id), body, nx=True, ex=DECISION_TTL_S):
                return KeptDecision(submission, decision)
            stored = await self._redis.get(self._key(task_id))
        return _parse(stored) if stored is not None else KeptDecision(submission, decision)


def _parse(raw: str | bytes) -> KeptDecision:
    kept = _Kept.model_validate_json(raw)
    return KeptDecision(kept.submission, kept.decision)
