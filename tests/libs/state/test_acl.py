"""Redis ACL users on a real Redis: each service and agent limited to its key prefixes and commands."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError
from tests.fixtures.redis_server import PrivateRedis
from tests.fixtures.stack import free_port
from typer.testing import CliRunner

from handrail.state.acl import redis_users
from handrail_cli.main import app
from handrail_dev.redis_users import ensure_users

pytestmark = pytest.mark.bus


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, redis.Redis]]]:
    """A deployment's users on the shared Redis (prefix of its own), logged in as each of them."""
    prefix = f"tacl{uuid.uuid4().hex[:8]}:"
    env = {"HANDRAIL_REDIS_URL": redis_url, "HANDRAIL_REDIS_PREFIX": prefix, "HANDRAIL_GROUP_PREFIX": "g-"}
    urls = ensure_users(tmp_path, env, ["router", "expense-intake"], ["expense-intake"])
    clients = {who: redis.Redis.from_url(url, decode_responses=True) for who, url in urls.items()}
    yield prefix, clients
    for client in clients.values():
        client.close()
    admin = redis.Redis.from_url(redis_url)
    for user in redis_users(prefix, ["expense-intake"], "g-"):
        admin.execute_command("ACL", "DELUSER", user.name)
    admin.close()


def test_an_agent_works_on_task_keys_and_only_reads_halts(stack: tuple[str, dict[str, redis.Redis]]) -> None:
    prefix, clients = stack
    agent = clients["expense-intake"]
    agent.hset(f"{prefix}{{t1}}:task", "head", "h")  # a task's keys: acceptance, budgets, loops, effects
    assert agent.eval("return redis.call('HGET', KEYS[1], 'head')", 1, f"{prefix}{{t1}}:task") == "h"
    agent.hset(f"{prefix}breaker:tool:x", "state", "half_open")  # its admission takes a half-open probe
    agent.set(f"{prefix}fence:{{g-agent-expense-intake:topic:0}}", "1")  # its own group's fences
    assert agent.get(f"{prefix}halt:agent:expense-intake") is None  # it may read halts ...
    for forbidden in (
        f"{prefix}halt:agent:expense-intake",  # ... never lift or set one
        f"{prefix}autonomy:expense-intake/expense-approval",
        f"{prefix}prompt:expense-intake",
        f"{prefix}state:generation",
        f"{prefix}fence:{{g-validator:topic:0}}",  # another consumer's fences
        f"other{prefix}{{t1}}:task",  # another deployment's keys
    ):
        with pytest.raises(NoPermissionError):
            agent.set(forbidden, "x")
    with pytest.raises(NoPermissionError):  # nor through a script
        agent.eval("return redis.call('DEL', KEYS[1])", 1, f"{prefix}halt:agent:expense-intake")


def test_no_user_may_run_what_handrail_never_needs(stack: tuple[str, dict[str, redis.Redis]]) -> None:
    prefix, clients = stack
    router = clients["router"]
    router.hset(f"{prefix}halt:agent:expense-intake", "by", "operator:ops")  # a service rebuilds halts
    with pytest.raises(NoPermissionError):
        router.set(f"other{prefix}x", "1")
    for client in clients.values():
        for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "maxmemory"), ("ACL", "LIST")):
            with pytest.raises(NoPermissionError):
                client.execute_command(*command)
        assert client.ping()


def test_the_rendered_acl_file_is_what_a_fresh_redis_enforces(tmp_path: Path) -> None:
    """`handrail redis users` output, loaded by a redis-server of its own (as docker-compose and k8s run it)."""

    out = tmp_path / "users"
    rendered = CliRunner().invoke(app, ["redis", "users", "--out", str(out)])
    assert rendered.exit_code == 0, rendered.output
    first = (out / "users.acl").read_text()
    again = CliRunner().invoke(app, ["redis", "users", "--out", str(out)])  # passwords are kept
    assert again.exit_code == 0 and (out / "users.acl").read_text() == first
    data = tmp_path / "redis"
    data.mkdir()
    (data / "users.acl").write_text((out / "users.acl").read_text())
    server = PrivateRedis(free_port(), data, persistent=False)
    server.start()
    try:
        password = (out / "hr:expense-intake.password").read_text().strip()
        agent = redis.Redis(port=server.port, username="hr:expense-intake", password=password)
        agent.set("hr:{t1}:task", "1")
        with pytest.raises(NoPermissionError):
            agent.set("hr:halt:agent:expense-intake", "1")
        anonymous = redis.Redis(port=server.port)
        assert anonymous.ping()  # the health checks still work ...
        with pytest.raises(NoPermissionError):
            anonymous.get("hr:{t1}:task")  # ... and nothing else does without a user
        agent.close()
        anonymous.close()
    finally:
        server.stop()
