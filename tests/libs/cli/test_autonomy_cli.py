"""``handrail autonomy status|set|clear`` as a user runs them: a separate process, real Kafka and Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.cli import handrail as run_handrail
from tests.fixtures.reviews import reviews

from handrail.audit import AuditRecord
from handrail.audit.reader import read_key
from handrail.autonomy import Outcome
from handrail.bus import make_reader
from handrail.bus.broker import make_producer
from handrail.contracts import load_contracts
from handrail.messages import ReviewRequested
from handrail.recovery import Rebuilder, StateKeeper
from handrail.signing import OPERATOR, SigningKey
from handrail.state import connect_redis, generation
from handrail.tools import default_registry
from handrail.topics import Topics, ensure_topics

PROJECT_ROOT = Path(__file__).resolve().parents[3]
A, W = "expense-approver", "expense-approval"
KEY = f"autonomy/{A}/{W}"


def handrail(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_handrail(*args, env={"COLUMNS": "200", **env})


def status(env: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    shown = handrail("autonomy", "status", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    return {(row["agent"], row["workflow"]): row for row in rows}


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The shipped contracts, with a rule that promotes exception-based after 4 reviews at 75 % unchanged."""
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    (config / "autonomy.yaml").write_text(
        "window_reviews: 100\n"
        "promote:\n  exception-based: {min_reviews: 4, min_approved_unchanged_ratio: 0.75}\n"
        "demote: {min_reviews: 4, max_rejected_ratio: 0.3}\n"
    )
    return config


@pytest.fixture
async def env(kafka_bootstrap: str, redis_url: str, config_dir: Path, tmp_path: Path) -> dict[str, str]:
    run = uuid.uuid4().hex[:10]
    keys = tmp_path / "keys"
    SigningKey.generate(OPERATOR).save(keys)  # the operator's records are signed, and checked
    topics = Topics(f"t{run}.")
    agents = load_contracts(config_dir, default_registry().names()).agents
    await ensure_topics(kafka_bootstrap, topics.specs(agents))
    redis = connect_redis(redis_url)
    await generation.stamp(redis, f"t{run}:")
    await redis.aclose()
    return {
        "HANDRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HANDRAIL_TOPIC_PREFIX": topics.prefix,
        "HANDRAIL_REDIS_URL": redis_url,
        "HANDRAIL_REDIS_PREFIX": f"t{run}:",
        "HANDRAIL_CONFIG_DIR": str(config_dir),
        "HANDRAIL_SIGNING_KEY_FILE": str(keys / f"{OPERATOR}.pem"),
        "HANDRAIL_TRUSTED_KEYS_FILE": str(keys),
    }


async def publish_reviews(env: dict[str, str], outcomes: dict[Outcome, int]) -> None:
    topics = Topics(env["HANDRAIL_TOPIC_PREFIX"])
    producer = make_producer(env["HANDRAIL_KAFKA_BOOTSTRAP"], "test-reviews")
    await producer.start()
    try:
        for record in reviews(A, W, outcomes):
            topic = topics.reviews_requested if isinstance(record, ReviewRequested) else topics.reviews_decided
            await producer.send_and_wait(topic, record.to_bytes(), key=record.task_id.encode())
    finally:
        await producer.stop()


async def lose_and_rebuild_redis(env: dict[str, str]) -> None:
    """Redis comes back empty (this prefix), and a service's keeper rebuilds it from Kafka."""
    prefix, bootstrap = env["HANDRAIL_REDIS_PREFIX"], env["HANDRAIL_KAFKA_BOOTSTRAP"]
    redis = connect_redis(env["HANDRAIL_REDIS_URL"])
    try:
        await redis.delete(*[key async for key in redis.scan_iter(match=f"{prefix}*")])
        lost = handrail("autonomy", "status", env=env)
        assert lost.returncode == 1 and "Redis has no state generation" in lost.stderr, "fails closed, says why"
        rebuilder = Rebuilder(
            redis,
            prefix,
            Topics(env["HANDRAIL_TOPIC_PREFIX"]),
            lambda: make_reader(bootstrap, "test-rebuild"),
            settle_s=0.0,
            lock_ttl_s=30.0,
        )
        assert await StateKeeper(redis, prefix, rebuilder).ensure() is not None
    finally:
        await redis.aclose()


@pytest.mark.bus
async def test_status_set_and_clear_round_trip_audited_and_surviving_a_redis_loss(env: dict[str, str]) -> None:
    before = status(env)
    vendor = "vendor-due-diligence"
    assert set(before) == {
        (A, W), ("expense-intake", W),
        ("vendor-checker", vendor), ("risk-classifier", vendor), ("vendor-writer", vendor),
    }  # fmt: skip
    assert (before[A, W]["level"], before[A, W]["source"], before[A, W]["reviews"]) == ("exception-based", "config", 0)
    assert before[A, W]["recommendation"]["action"] == "hold"

    # Four reviews, three approved unchanged: the rule (75 % of 4) recommends audit-based; nothing applies it.
    await publish_reviews(env, {Outcome.APPROVED_UNCHANGED: 3, Outcome.EDITED: 1})
    judged = status(env)[A, W]
    assert judged["reviews"] == 4 and judged["counts"] == {
        "approved_unchanged": 3,
        "edited": 1,
        "rejected": 0,
        "timed_out": 0,
    }
    assert judged["recommendation"] == {
        "action": "promote",
        "level": "audit-based",
        "why": "approved unchanged 75.0% of 4 reviews >= 75.0%",
    }
    assert judged["level"] == "exception-based"
    table = handrail("autonomy", "status", env=env)
    assert table.returncode == 0 and "promote to audit-based" in table.stdout and "75.0% / 25.0%" in table.stdout

    done = handrail("autonomy", "set", A, W, "audit-based", "--reason", "four clean reviews", env=env)
    assert done.returncode == 0, done.stderr
    assert f"{A} in {W}: exception-based -> audit-based (override), revision 1" in done.stdout
    after = status(env)[A, W]
    assert (after["level"], after["source"], after["revision"]) == ("audit-based", "override", 1)
    assert after["reviews"] == 0, "the count starts again at the change"
    again = handrail("autonomy", "set", A, W, "audit-based", "--reason", "twice", env=env)
    assert again.returncode == 0 and "unchanged:" in again.stdout

    await lose_and_rebuild_redis(env)
    rebuilt = status(env)[A, W]
    assert (rebuilt["level"], rebuilt["source"], rebuilt["revision"]) == ("audit-based", "override", 1)

    assert handrail("autonomy", "clear", A, W, "--reason", "back to the contract", env=env).returncode == 0
    assert (status(env)[A, W]["level"], status(env)[A, W]["source"]) == ("exception-based", "config")

    audit = [
        AuditRecord.model_validate_json(value)
        for _, _, value in await read_key(env["HANDRAIL_KAFKA_BOOTSTRAP"], f"{env['HANDRAIL_TOPIC_PREFIX']}audit", KEY)
    ]
    assert [(r.action, r.reason, r.details["from"], r.details["to"]) for r in audit] == [
        ("autonomy.changed", "four clean reviews", "exception-based", "audit-based"),
        ("autonomy.cleared", "back to the contract", "audit-based", "exception-based"),
    ]
    assert all(r.actor.startswith("operator:") for r in audit)
    verified = handrail("audit", "verify", KEY, env=env)
    assert verified.returncode == 0 and "intact (2 records) and signed" in verified.stdout, verified.stdout
    assert all((r.signature or "").startswith(f"v1:{OPERATOR}:") for r in audit)


@pytest.mark.bus
async def test_a_bad_agent_workflow_or_level_is_a_usage_error(env: dict[str, str]) -> None:
    for args, message in [
        (("nobody", W, "audit-based"), "unknown agent 'nobody'"),
        ((A, "payroll", "audit-based"), "unknown workflow 'payroll'"),
        ((A, W, "autopilot"), "'autopilot' is not one of"),
    ]:
        refused = handrail("autonomy", "set", *args, "--reason", "r", env=env)
        assert refused.returncode == 2, refused.stderr
        assert message in " ".join(refused.stderr.split()), refused.stderr
    missing_reason = handrail("autonomy", "set", A, W, "audit-based", env=env)
    assert missing_reason.returncode == 2 and "--reason" in missing_reason.stderr
    nothing = handrail("autonomy", "status", "--agent", "nobody", env=env)
    assert nothing.returncode == 2
    assert status(env)[A, W]["source"] == "config", "nothing was changed"
