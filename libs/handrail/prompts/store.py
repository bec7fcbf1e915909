"""Which version of each prompt is active: a pointer in Redis, switchable and reversible at run time.

Keys (``<p>`` is the Redis prefix):

- ``<p>prompt:<name>:active``   the active version; absent means the version the agent declares
- ``<p>prompt:<name>:history``  the versions active before, newest first (what ``rollback`` returns to)
- ``<p>prompt:<name>:log``      the last changes, newest first, as JSON (who, when, from, to)
- ``<p>prompt:<name>:canary:<agent>``  the agent's canary of a candidate version, as JSON
  (``handrail.prompts.canary``); absent: no canary

Workers resolve the pointer at every step (with the agent's canary, in the same round
trip), so a switch, a canary or its rollback takes effect on the next step without a
restart. Activation loads and checks the version first (file
present, template valid): a bad version is refused then, not at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from handrail.prompts.canary import Canary
from handrail.prompts.errors import NothingToRollBack
from handrail.prompts.library import PromptLibrary, parse_ref
from handrail.prompts.template import PromptTemplate
from handrail.state.client import command, unavailable_as_retryable

#: Earlier versions kept for rollback, and changes kept in the log; far more than an incident needs.
HISTORY_DEPTH = 50
LOG_DEPTH = 100

_ACTIVATE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return {current, 0} end
local previous = current or ARGV[2]
if previous ~= '' and previous ~= ARGV[1] then
  redis.call('LPUSH', KEYS[2], previous)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
return {previous, 1}
"""

_ROLLBACK = """
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[1] then return {'', 0} end
redis.call('LPOP', KEYS[2])
local current = redis.call('GET', KEYS[1]) or ''
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
return {current, 1}
"""


#: Ends a canary only if it is still the one the caller judged (``ARGV[1]``, its id), and logs why.
_END_CANARY = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['id'] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
"""


@dataclass(frozen=True)
class Switch:
    """A change of a prompt's active version."""

    name: str
    previous: str | None
    version: str
    changed: bool


class PromptStore:
    """Prompt files plus the active-version pointers in Redis."""

    def __init__(self, library: PromptLibrary, redis: aioredis.Redis, prefix: str = "hr:") -> None:
        self.library = library
        self._redis = redis
        self._prefix = prefix
        self._activate = redis.register_script(_ACTIVATE)
        self._rollback = redis.register_script(_ROLLBACK)
        self._end_canary = redis.register_script(_END_CANARY)

    @property
    def redis(self) -> aioredis.Redis:
        """The client it reads and writes with."""
        return self._redis

    def _keys(self, name: str) -> list[str]:
        base = f"{self._prefix}prompt:{name}"
        return [f"{base}:active", f"{base}:history", f"{base}:log"]

    async def active_version(self, name: str) -> str | None:
        """The version switched on at run time, or None when the declared one applies."""
        async with unavailable_as_retryable(f"read the active version of prompt {name}"):
            return _text(await command(self._redis, "GET", self._keys(name)[0]))

    def _canary_key(self, name: str, agent: str) -> str:
        return f"{self._prefix}prompt:{name}:canary:{agent}"

    async def resolve(self, ref: str, *, agent: str | None = None, task_id: str | None = None) -> PromptTemplate:
        """The template to use now for an agent declaring ``ref`` (``name@version``); with the agent and the
        task, a task in the cohort of the agent's canary gets the candidate. One round trip either way."""
        name, declared = parse_ref(ref)
        if agent is None or task_id is None:
            return self.library.load(name, await self.active_version(name) or declared)
        async with unavailable_as_retryable(f"read the active version of prompt {name}"):
            active, canary = await command(self._redis, "MGET", self._keys(name)[0], self._canary_key(name, agent))
        live = _text(active) or declared
        running = _canary(canary, live)
        if running is not None and running.in_cohort(task_id):
            return self.library.load(name, running.version)
        return self.library.load(name, live)

    async def canary(self, name: str, agent: str, *, declared: str | None = None) -> Canary | None:
        """The agent's canary of prompt ``name``, if one holds (its live version is still the active one)."""
        async with unavailable_as_retryable(f"read the canary of prompt {name} for {agent}"):
            active, canary = await command(self._redis, "MGET", self._keys(name)[0], self._canary_key(name, agent))
        return _canary(canary, _text(active) or declared)

    async def canaries(self, refs: dict[str, str]) -> dict[str, Canary]:
        """The canaries that hold, by agent, for agents declaring ``refs`` (agent -> ``name@version``): one MGET."""
        if not refs:
            return {}
        parsed = {agent: parse_ref(ref) for agent, ref in refs.items()}
        keys = [k for agent, (name, _) in parsed.items() for k in (self._keys(name)[0], self._canary_key(name, agent))]
        async with unavailable_as_retryable("read the prompts' canaries"):
            values = await command(self._redis, "MGET", *keys)
        found = {}
        for index, (agent, (_, declared)) in enumerate(parsed.items()):
            canary = _canary(values[2 * index + 1], _text(values[2 * index]) or declared)
            if canary is not None:
                found[agent] = canary
        return found

    async def start_canary(self, canary: Canary) -> Canary | None:
        """Start (or replace) the agent's canary after checking the candidate loads; returns the one replaced."""
        self.library.load(canary.prompt, canary.version)
        key = self._canary_key(canary.prompt, canary.agent)
        entry = _entry("canary.started", canary.version, canary.by, percent=canary.percent, agent=canary.agent)
        log = self._keys(canary.prompt)[2]
        what = f"start a canary of prompt {canary.prompt}"
        async with unavailable_as_retryable(what), self._redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.set(key, canary.to_json())
            pipe.lpush(log, entry)
            pipe.ltrim(log, 0, LOG_DEPTH - 1)
            replaced, *_ = await pipe.execute()
        return Canary.from_json(replaced) if replaced else None

    async def end_canary(self, canary: Canary, action: str, *, by: str, reason: str | None = None) -> bool:
        """End ``canary`` (``canary.stopped`` or ``canary.rolled_back``) if it is still the agent's canary."""
        key = self._canary_key(canary.prompt, canary.agent)
        entry = _entry(action, canary.version, by, agent=canary.agent, reason=reason)
        async with unavailable_as_retryable(f"end the canary of prompt {canary.prompt}"):
            ended = await self._end_canary(keys=[key, self._keys(canary.prompt)[2]], args=[canary.id, entry, LOG_DEPTH])
        return bool(ended)

    async def activate(self, name: str, version: str, *, declared: str | None = None, by: str = "cli") -> Switch:
        """Make ``version`` active after checking it loads; ``declared`` is what rollback returns to first."""
        self.library.load(name, version)  # refuses a missing file or a bad template now
        entry = _entry("activate", version, by)
        async with unavailable_as_retryable(f"activate prompt {name}@{version}"):
            previous, changed = await self._activate(
                keys=self._keys(name), args=[version, declared or "", entry, HISTORY_DEPTH, LOG_DEPTH]
            )
        return Switch(name, _text(previous) or None, version, bool(changed))

    async def rollback(self, name: str, *, by: str = "cli") -> Switch:
        """Return to the version active before the current one (checked before switching)."""
        history = await self.history(name)
        if not history:
            raise NothingToRollBack(f"prompt {name!r} has no earlier version to roll back to")
        target = history[0]
        self.library.load(name, target)
        async with unavailable_as_retryable(f"roll back prompt {name}"):
            previous, changed = await self._rollback(
                keys=self._keys(name), args=[target, _entry("rollback", target, by), LOG_DEPTH]
            )
        if not changed:
            raise NothingToRollBack(f"prompt {name!r} changed while rolling back; look again and retry")
        return Switch(name, _text(previous) or None, target, True)

    async def history(self, name: str) -> list[str]:
        """Versions active before the current one, newest first."""
        async with unavailable_as_retryable(f"read the history of prompt {name}"):
            values = await self._redis.lrange(self._keys(name)[1], 0, -1)
        return [v for v in (_text(x) for x in values) if v]

    async def changes(self, name: str, limit: int = 10) -> list[dict[str, Any]]:
        """The last ``limit`` changes of prompt ``name``, newest first."""
        async with unavailable_as_retryable(f"read the log of prompt {name}"):
            values = await self._redis.lrange(self._keys(name)[2], 0, limit - 1)
        return [json.loads(v) for v in (_text(x) for x in values) if v]


def _entry(action: str, version: str, by: str, **more: Any) -> str:
    entry = {"action": action, "version": version, "by": by, "at": datetime.now(UTC).isoformat()}
    return json.dumps(entry | {k: v for k, v in more.items() if v is not None})


def _canary(stored: Any, live: str | None) -> Canary | None:
    """A stored canary that still holds: one compared with another version than the live one has ended."""
    if stored is None:
        return None
    canary = Canary.from_json(stored)
    return canary if canary.live == live else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
