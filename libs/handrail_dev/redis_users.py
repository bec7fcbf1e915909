"""Redis ACL users for a local stack: one per service and agent (``handrail.state.acl``), passwords in the run dir.

The launcher creates the users of the stack's key prefix on the stack's Redis (``ACL SETUSER``,
then ``ACL SAVE`` so a restarted Redis keeps them: the launcher's Redis and the tests' private
ones run with an ACL file) and gives each process its own user in ``HANDRAIL_REDIS_URL``. The
passwords are made once and kept (0600) in ``<run_dir>/redis-users/``, so a restarted process logs in again.
A caller whose ``HANDRAIL_REDIS_URL`` already names a user is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from redis.exceptions import ResponseError

from handrail.service.settings import ServiceSettings
from handrail.state.acl import RedisUser, redis_users, user_name
from handrail.state.acl import passwords as acl_passwords

log = logging.getLogger(__name__)

FOLDER = "redis-users"
#: What a process uses when its environment does not say (the settings' own defaults).
_DEFAULT_URL = str(ServiceSettings.model_fields["redis_url"].default)
_DEFAULT_PREFIX = str(ServiceSettings.model_fields["redis_prefix"].default)
_DEFAULT_GROUP_PREFIX = str(ServiceSettings.model_fields["group_prefix"].default)


def has_user(url: str) -> bool:
    """Whether ``url`` already logs in as somebody (then the launcher does not change it)."""
    return bool(urlsplit(url).username)


def with_user(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user``."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def ensure_users(run_dir: Path, env: Mapping[str, str], who: Iterable[str], agents: Iterable[str]) -> dict[str, str]:
    """Create (or refresh) the stack's Redis users and return each one's URL, by ``who`` (router, an agent ...).

    ``env`` is what the processes get: their Redis URL, key prefix and group prefix.
    """
    url = env.get("HANDRAIL_REDIS_URL") or _DEFAULT_URL
    if has_user(url):
        return {}
    prefix = env.get("HANDRAIL_REDIS_PREFIX") or _DEFAULT_PREFIX
    groups = env.get("HANDRAIL_GROUP_PREFIX") or _DEFAULT_GROUP_PREFIX
    users = {u.name: u for u in redis_users(prefix, sorted(set(agents)), groups)}
    wanted = {w: users[user_name(prefix, w)] for w in who if user_name(prefix, w) in users}
    passwords = acl_passwords(run_dir / FOLDER, [u.name for u in wanted.values()])
    _apply(url, [(u, passwords[u.name]) for u in wanted.values()])
    return {w: with_user(url, u.name, passwords[u.name]) for w, u in wanted.items()}


def _apply(url: str, users: list[tuple[RedisUser, str]]) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        for user, password in users:
            # The rules verbatim (redis-py's acl_setuser cannot say %R~ for read-only patterns).
            client.execute_command("ACL", "SETUSER", user.name, *user.rules(password))  # type: ignore[no-untyped-call]
        try:
            client.acl_save()
        except ResponseError as exc:  # a Redis started without an ACL file: the users last until it restarts
            log.warning("Redis at %s keeps the stack's users only until it restarts: %s", urlsplit(url).hostname, exc)
    finally:
        client.close()
