"""Redis ACL users: one per service and agent, each limited to its key prefixes and to the commands
Handrail uses (``ACL SETUSER`` rules, the same for the local launcher, docker-compose and Kubernetes).

Every key of a deployment starts with its prefix (``HANDRAIL_REDIS_PREFIX``). Within it:

- the platform services (router, validator, circuit-breaker, human-review) and the operators'
  CLI may read and write all of it: any of them may have to rebuild the state from Kafka
  (``handrail.recovery``), which writes every kind of key;
- an agent's worker may read and write the tasks' keys (``<p>{<task>}…``: acceptance, budgets,
  loop windows, side-effect claims), the breakers (its admission takes a half-open probe) and
  the fences of its own consumer group, its own shadow's findings, and only read halts, autonomy levels, active prompts
  and the state generation. So no agent can lift a halt on itself, raise its own autonomy,
  switch a prompt, or stamp a state generation; workers never rebuild (they wait for a
  service to), and nobody may touch another deployment's keys.

Commands: reading, writing, scripts (EVALSHA, SCRIPT LOAD), MULTI/EXEC and the connection's
own (AUTH, HELLO, PING, SELECT); nothing ``@dangerous`` (FLUSHALL, KEYS, CONFIG, DEBUG, ACL …)
nor ``@admin``, and no pub/sub channels.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from handrail.signing.policy import CIRCUIT_BREAKER, HUMAN_REVIEW, OPERATOR, ROUTER, VALIDATOR

#: The command rules every Handrail user gets (after ``-@all``).
COMMANDS = ("+@read", "+@write", "+@scripting", "+@transaction", "+@connection", "-@dangerous", "-@admin")
#: Who may read and write every key of the deployment's prefix.
FULL_ACCESS = (ROUTER, VALIDATOR, CIRCUIT_BREAKER, HUMAN_REVIEW, OPERATOR)


@dataclass(frozen=True)
class RedisUser:
    """One ACL user: its name, the key patterns it may read and write, those it may only read."""

    name: str
    read_write: tuple[str, ...]
    read_only: tuple[str, ...] = ()

    def rules(self, password: str) -> list[str]:
        """``ACL SETUSER <name>`` arguments: everything it had is reset first."""
        return ["reset", "on", f">{password}", *self._access()]

    def file_line(self, password: str) -> str:
        """Its line in a Redis ACL file (``aclfile``): the password only as its sha256."""
        digest = hashlib.sha256(password.encode()).hexdigest()
        return " ".join(["user", self.name, "on", f"#{digest}", *self._access()])

    def _access(self) -> list[str]:
        keys = [f"~{pattern}" for pattern in self.read_write] + [f"%R~{pattern}" for pattern in self.read_only]
        return ["resetchannels", *keys, "-@all", *COMMANDS]


#: The default user (no password) may only PING: health checks work, nothing else does.
DEFAULT_USER_LINE = "user default on nopass resetchannels -@all +ping"


def user_name(prefix: str, who: str) -> str:
    """The ACL user of ``who`` (a service, an agent, ``operator``) in the deployment with key ``prefix``."""
    return f"{prefix}{who}"


def redis_users(prefix: str, agents: list[str], group_prefix: str) -> list[RedisUser]:
    """The users of a deployment: the services and the operators first, then one per agent."""
    everything = (f"{prefix}*",)
    users = [RedisUser(user_name(prefix, who), everything) for who in FULL_ACCESS]
    for agent in sorted(agents):
        group = f"{group_prefix}agent-{agent}"
        users.append(
            RedisUser(
                user_name(prefix, agent),
                # shadow:<agent>: what its shadow worker found (``handrail_worker.shadow``), its own keys only.
                read_write=(
                    f"{prefix}{{*",
                    f"{prefix}breaker:*",
                    f"{prefix}fence:{{{group}:*",
                    f"{prefix}shadow:{agent}:*",
                ),
                read_only=(f"{prefix}halt:*", f"{prefix}autonomy:*", f"{prefix}prompt:*", f"{prefix}state:*"),
            )
        )
    return users


def passwords(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """Each user's password from ``<folder>/<user>.password`` (0600), made once when missing."""
    found: dict[str, str] = {}
    for name in names:
        path = folder / f"{name}.password"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_urlsafe(24))
        found[name] = path.read_text().strip()
    return found


def acl_file(users: list[RedisUser], passwords_by_user: dict[str, str]) -> str:
    """A Redis ACL file: the default user limited to PING, then every user of the deployment."""
    lines = [DEFAULT_USER_LINE, *(u.file_line(passwords_by_user[u.name]) for u in users)]
    return "\n".join(lines) + "\n"
