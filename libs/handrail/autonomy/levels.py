"""The effective autonomy level of each (agent, workflow): the config's, unless an override is in force.

An override is an ``AutonomyChanged`` on the compacted control topic (the
record) and the same record in Redis under ``<p>autonomy:<agent>/<workflow>``
(the fast layer), written only if it is newer than what is there (its
``order``), so a late or replayed write never rolls a level back. Redis losing
it is noticed like any other state (the generation marker, read in the same
script) and the override is rebuilt from the control topic
(``handrail.recovery``).

``level`` is for the hot path: each process keeps what it read for ``ttl_s``,
so a (agent, workflow) costs one Redis round trip per ``ttl_s`` however many
steps ask, and concurrent askers share that one read. A change made elsewhere
takes effect in every process within ``ttl_s``.

``set`` changes it: under a short per-key lock in Redis, it audits the change
(chain ``autonomy/<agent>/<workflow>``), publishes the record, then stores it.
Its id is derived from the key and the revision, so a change retried after a
crash is the same change (the audit and the record dedupe).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from handrail.audit import AuditLog
from handrail.autonomy.errors import AutonomyError, ChangeInProgress, Superseded, Unchanged, UnknownTarget
from handrail.autonomy.records import AutonomyChanged, autonomy_key
from handrail.bus.publisher import Publisher
from handrail.contracts import Autonomy, Contracts
from handrail.messages import derived_message_id, utcnow
from handrail.state.client import unavailable_as_retryable
from handrail.state.generation import GuardedScript

#: How long a process trusts the level it read: the most a change waits to reach every process.
DEFAULT_TTL_S = 5.0
#: A change is a handful of round trips; a holder that died frees the key after this long.
_LOCK_TTL_MS = 10_000

#: The key comes as ARGV[1], not KEYS: a worker's Redis user may only read levels (handrail.state.acl).
_READ = "return redis.call('HGET', ARGV[1], 'record')"

_STORE = """
if ARGV[1] <= (redis.call('HGET', KEYS[1], 'order') or '') then return 0 end
redis.call('HSET', KEYS[1], 'order', ARGV[1], 'record', ARGV[2])
return 1
"""

_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Effective:
    """An (agent, workflow)'s level now, where it comes from, and the latest change (if any)."""

    agent: str
    workflow: str
    level: Autonomy
    configured: Autonomy
    latest: AutonomyChanged | None

    @property
    def source(self) -> Literal["config", "override"]:
        return "override" if self.latest is not None and self.latest.level is not None else "config"

    @property
    def since(self) -> datetime | None:
        """When this level took effect (the latest change, a cleared override too); None: always the config's."""
        return self.latest.at if self.latest is not None else None

    @property
    def revision(self) -> int:
        return self.latest.revision if self.latest is not None else 0


@dataclass(frozen=True)
class Recorder:
    """Where a change is recorded: the control topic (the record) and the audit trail."""

    publisher: Publisher
    control_topic: str
    audit: AuditLog


class AutonomyLevels:
    """Effective autonomy levels: ``level`` (cached, for every step) and ``set`` / ``clear`` (audited)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        contracts: Contracts,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.contracts = contracts
        self.ttl_s = ttl_s
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._read = GuardedScript(redis, _READ, prefix)
        self._store = GuardedScript(redis, _STORE, prefix)
        self._lock = GuardedScript(redis, _LOCK, prefix)
        self._cache: dict[tuple[str, str], tuple[float, Effective]] = {}
        self._reading: dict[tuple[str, str], asyncio.Future[Effective]] = {}

    def key(self, agent: str, workflow: str) -> str:
        return state_key(self._prefix, agent, workflow)

    def check(self, agent: str, workflow: str) -> None:
        """Raise ``UnknownTarget`` unless ``agent`` runs a step of ``workflow``."""
        if agent not in self.contracts.agents:
            raise UnknownTarget(f"unknown agent {agent!r}; agents.yaml declares {sorted(self.contracts.agents)}")
        spec = self.contracts.workflows.get(workflow)
        if spec is None:
            raise UnknownTarget(
                f"unknown workflow {workflow!r}; workflows.yaml declares {sorted(self.contracts.workflows)}"
            )
        if agent not in spec.agents:
            raise UnknownTarget(
                f"agent {agent!r} runs no step of workflow {workflow!r} (its agents: {sorted(spec.agents)})"
            )

    async def level(self, agent: str, workflow: str) -> Autonomy:
        """The effective level, as read at most ``ttl_s`` ago (one Redis round trip per key per ``ttl_s``).

        An agent asked about a workflow it runs no step of has its configured level: no override
        can exist for such a pair (``set`` refuses it). Raises ``UnknownTarget`` for an unknown
        agent, ``StateLost`` / ``StateUnavailable`` (retryable) when Redis lost its state or
        cannot be reached.
        """
        pair = (agent, workflow)
        cached = self._cache.get(pair)
        if cached is not None and cached[0] > self._clock():
            return cached[1].level
        try:
            self.check(agent, workflow)
        except UnknownTarget:
            if agent not in self.contracts.agents:
                raise
            return self.contracts.agents[agent].autonomy
        reading = self._reading.get(pair)
        if reading is None:
            reading = asyncio.ensure_future(self.current(agent, workflow))
            self._reading[pair] = reading
            reading.add_done_callback(lambda _: self._reading.pop(pair, None))
        # Shielded: one asker cancelled must not cancel the read the others wait on.
        return (await asyncio.shield(reading)).level

    async def current(self, agent: str, workflow: str) -> Effective:
        """The effective level read from Redis now (and kept for ``level``)."""
        self.check(agent, workflow)
        async with unavailable_as_retryable(f"read the autonomy level of {agent} in {workflow}"):
            raw = await self._read(keys=[], args=[self.key(agent, workflow)])
        latest = AutonomyChanged.model_validate_json(raw) if raw else None
        return self._remember(self._effective(agent, workflow, latest))

    def _effective(self, agent: str, workflow: str, latest: AutonomyChanged | None) -> Effective:
        configured = self.contracts.agents[agent].autonomy
        level = latest.level if latest is not None and latest.level is not None else configured
        return Effective(agent, workflow, level, configured, latest)

    def _remember(self, effective: Effective) -> Effective:
        self._cache[(effective.agent, effective.workflow)] = (self._clock() + self.ttl_s, effective)
        return effective

    async def set(
        self,
        agent: str,
        workflow: str,
        level: Autonomy | None,
        *,
        by: str,
        reason: str,
        recorder: Recorder,
        expected: Autonomy | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> AutonomyChanged:
        """Make ``level`` the effective level (None: back to the config's); the change as recorded.

        Audited first (who, from, to, why), then published on the control topic, then stored.
        ``expected``: change only if the level is still this one (``Superseded`` otherwise), for
        changes decided on a level read earlier (the graduation rule's). ``evidence`` marks the
        change as the rule's (``auto``). Raises ``Unchanged`` when it would change nothing,
        ``ChangeInProgress`` while another change of the same key runs.
        """
        self.check(agent, workflow)
        if not reason.strip():
            raise AutonomyError("a change needs a reason")
        lock_key = f"{self.key(agent, workflow)}:lock"
        token = uuid.uuid4().hex
        async with unavailable_as_retryable(f"lock the autonomy level of {agent} in {workflow}"):
            locked = await self._lock(keys=[lock_key], args=[token, _LOCK_TTL_MS])
        if not locked:
            raise ChangeInProgress(f"another change of {agent} in {workflow} is being made; try again in a moment")
        try:
            current = await self.current(agent, workflow)
            if expected is not None and current.level != expected:
                raise Superseded(f"{agent} in {workflow} is {current.level.value} now, not {expected.value}")
            if level is None and current.source == "config":
                raise Unchanged(f"{agent} in {workflow} has no override: it is {current.level.value} (config)")
            if level is not None and current.level == level:
                raise Unchanged(f"{agent} in {workflow} is {level.value} already ({current.source})")
            change = self._change(current, level, by=by, reason=reason, evidence=evidence)
            await recorder.audit.record(
                change.key,
                dedupe_key=change.message_id,
                actor=by,
                action="autonomy.changed" if level is not None else "autonomy.cleared",
                reason=reason,
                workflow=workflow,
                details={
                    "agent": agent,
                    "workflow": workflow,
                    "from": current.level.value,
                    "to": (level or current.configured).value,
                    "source": "override" if level is not None else "config",
                    "configured": current.configured.value,
                    "revision": change.revision,
                    "auto": change.auto,
                    **({"evidence": evidence} if evidence is not None else {}),
                },
            )
            await recorder.publisher.publish(recorder.control_topic, change, key=change.key)
            await self.absorb(change)
            return change
        finally:
            with contextlib.suppress(Exception):  # Redis away: the lock expires by itself
                await self._redis.eval(_UNLOCK, 1, lock_key, token)

    def _change(
        self, current: Effective, level: Autonomy | None, *, by: str, reason: str, evidence: dict[str, Any] | None
    ) -> AutonomyChanged:
        revision = current.revision + 1
        key = autonomy_key(current.agent, current.workflow)
        return AutonomyChanged(
            # The same change retried (a crash before it was stored) gets the same id: audit and record dedupe.
            message_id=derived_message_id(key, f"revision/{revision}/{level.value if level else 'config'}"),
            agent=current.agent,
            workflow=current.workflow,
            level=level,
            previous=current.level,
            configured=current.configured,
            revision=revision,
            reason=reason,
            by=by,
            auto=evidence is not None,
            evidence=evidence,
            at=utcnow(),
        )

    async def absorb(self, change: AutonomyChanged) -> bool:
        """Store a recorded change in Redis if it is newer than the one there; whether it was."""
        async with unavailable_as_retryable(f"store the autonomy level of {change.agent} in {change.workflow}"):
            stored = bool(
                await self._store(
                    keys=[self.key(change.agent, change.workflow)], args=[change.order, change.model_dump_json()]
                )
            )
        if stored and change.agent in self.contracts.agents:
            self._remember(self._effective(change.agent, change.workflow, change))
        return stored


def state_key(prefix: str, agent: str, workflow: str) -> str:
    """Where Redis keeps the latest change of (agent, workflow): fields ``order`` and ``record``."""
    return f"{prefix}autonomy:{agent}/{workflow}"


def restore_change(pipe: Pipeline, prefix: str, change: AutonomyChanged) -> None:
    """Queue on ``pipe`` the write of a change read back from the control topic (``handrail.recovery``: the
    rebuild holds the state lock, and every guarded write waits for it)."""
    pipe.hset(
        state_key(prefix, change.agent, change.workflow),
        mapping={"order": change.order, "record": change.model_dump_json()},
    )
