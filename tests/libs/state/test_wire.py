"""The multiplexed connection the guarded scripts run on, against a real redis-server of the module's own."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from tests.fixtures.redis_server import PrivateRedis, run_private_redis
from tests.fixtures.stack import free_port

from handrail.errors import StateUnavailable
from handrail.state import connect_redis, generation
from handrail.state.client import command, unavailable_as_retryable, wire_of
from handrail.state.generation import GuardedScript
from handrail.state.wire import Address, Wire

pytestmark = pytest.mark.bus


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    yield from run_private_redis(tmp_path_factory, free_port(), persistent=False)


@pytest.fixture
async def wire(private_redis: PrivateRedis) -> AsyncIterator[Wire]:
    wire = Wire(Address("127.0.0.1", private_redis.port, timeout_s=1.0))
    yield wire
    wire.close()


async def test_concurrent_calls_each_get_their_own_reply(wire: Wire) -> None:
    # Hundreds of calls in flight on one connection: replies are matched in order, never swapped.
    replies = await asyncio.gather(*(wire.call("ECHO", f"call-{i}") for i in range(500)))
    assert replies == [f"call-{i}" for i in range(500)]
    assert await wire.call("INCRBY", "n", 2) == 2 and await wire.call("GET", "missing") is None


async def test_an_error_reply_is_raised_and_the_calls_around_it_are_unharmed(wire: Wire) -> None:
    before, wrong, after = await asyncio.gather(
        wire.call("ECHO", "a"), wire.call("NOSUCHCOMMAND"), wire.call("ECHO", "b"), return_exceptions=True
    )
    assert (before, after) == ("a", "b")
    assert isinstance(wrong, ResponseError) and "unknown command" in str(wrong)


async def test_a_script_redis_does_not_have_is_loaded_and_run(wire: Wire, private_redis: PrivateRedis) -> None:
    await wire.call("SCRIPT", "FLUSH")
    client = connect_redis(private_redis.url)
    try:
        script = client.register_script("return {KEYS[1], ARGV[1], ARGV[2]}")
        assert await wire.run_script(script.sha, str(script.script), ["k"], ["v", 2.5]) == ["k", "v", "2.5"]
    finally:
        await client.aclose()


async def test_a_lost_connection_fails_the_calls_in_flight_and_the_next_call_reconnects(
    wire: Wire, private_redis: PrivateRedis
) -> None:
    await wire.call("SET", "k", "1")
    in_flight = asyncio.ensure_future(wire.call("BLPOP", "never", 0))  # waits on the server
    await asyncio.sleep(0.1)
    admin = connect_redis(private_redis.url)
    try:
        await admin.client_kill_filter(_type="normal", skipme=True)  # as a restart would: the connection cut
    finally:
        await admin.aclose()
    with pytest.raises(RedisConnectionError):
        await in_flight
    assert await wire.call("GET", "k") == "1"  # reconnected


async def test_a_redis_that_stops_answering_is_a_timeout_not_a_hang(wire: Wire, private_redis: PrivateRedis) -> None:
    await wire.call("PING")
    assert private_redis.process is not None
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StateUnavailable):
            async with unavailable_as_retryable("read k"):
                await wire.call("GET", "k")
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)
    assert await wire.call("PING") == "PONG"


async def test_a_redis_that_is_down_is_a_connection_error(private_redis: PrivateRedis) -> None:
    wire = Wire(Address("127.0.0.1", free_port(), connect_timeout_s=0.5))
    with pytest.raises(RedisConnectionError, match="Error connecting"):
        await wire.call("PING")


async def test_clients_of_connect_redis_run_guarded_scripts_on_the_wire_as_their_user(
    private_redis: PrivateRedis,
) -> None:
    admin = connect_redis(private_redis.url)
    client = connect_redis(private_redis.url, username="wire-user", password="s3cret")
    try:
        await admin.acl_setuser("wire-user", enabled=True, passwords=["+s3cret"], keys=["w:*"], commands=["+@all"])
        await generation.stamp(admin, "w:")
        script = GuardedScript(client, "return redis.call('INCR', KEYS[1])", "w:")
        assert wire_of(client) is not None
        # Redis has not loaded the script yet: the first calls load it and run again, so they may run after
        # later ones (concurrent calls have no order; each coroutine's own calls keep theirs).
        counts = await asyncio.gather(*(script(keys=["w:n"], args=[]) for _ in range(50)))
        assert sorted(counts) == list(range(1, 51))
        outside = GuardedScript(client, "return redis.call('INCR', KEYS[1])", "w:")
        with pytest.raises(ResponseError, match=r"NOPERM|permissions"):
            await outside(keys=["elsewhere"], args=[])  # the user's key patterns hold on the wire too
    finally:
        await admin.acl_deluser("wire-user")
        await client.aclose()
        await admin.aclose()


async def test_a_wrong_password_is_refused_at_login(private_redis: PrivateRedis) -> None:
    wire = Wire(Address("127.0.0.1", private_redis.port, username="nobody", password="wrong"))
    with pytest.raises(ResponseError, match=r"WRONGPASS|invalid"):
        await wire.call("PING")
    wire.close()


async def test_plain_commands_of_the_hot_path_give_the_same_replies_either_way(private_redis: PrivateRedis) -> None:
    wired = connect_redis(private_redis.url)
    pooled = aioredis.Redis.from_url(private_redis.url, decode_responses=True)  # no wire: redis-py's path
    try:
        assert wire_of(wired) is not None and wire_of(pooled) is None
        for client, key in ((wired, "a"), (pooled, "b")):
            assert await command(client, "SET", key, "token") in ("OK", True)
            assert await command(client, "GET", key) == "token"
            assert await command(client, "SADD", f"{key}:done", "m1") == 1
            assert await command(client, "SADD", f"{key}:done", "m1") == 0
            assert await command(client, "HSET", f"{key}:task", "published", "1") == 1
    finally:
        await wired.aclose()
        await pooled.aclose()
