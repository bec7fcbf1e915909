"""Least privilege on a real broker: SASL/SCRAM-SHA-512, the StandardAuthorizer, and exactly the ACLs
`handrail acl render` prints.

The module starts its own broker (free ports, its own run dir) with one SCRAM user per
principal, creates the topics as ``handrail-admin``, applies the rendered ACLs as the
broker's super user, and stops and wipes it at the end. Then each principal does the
platform's hops with its own credentials (the platform still runs end to end), and
each forbidden operation is refused by the broker.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from tests.deploy.helpers import PROJECT_ROOT, app
from tests.fixtures.cli import handrail
from tests.fixtures.infra import unavailable
from tests.fixtures.stack import free_port
from typer.testing import CliRunner

from handrail.bus.acl import (
    ADMIN,
    CIRCUIT_BREAKER,
    HUMAN_REVIEW,
    OPERATOR,
    REPLAYER,
    ROUTER,
    SUBMITTER,
    VALIDATOR,
    AclBinding,
    agent_principal,
    principals,
)
from handrail.bus.acl import bindings as acl_bindings
from handrail.bus.security import SaslCredentials
from handrail.contracts import load_contracts
from handrail.errors import KafkaAdminError
from handrail.messages import DeadLetter, TaskResult, TaskStatus, TaskSubmitted, utcnow
from handrail.state import connect_redis, generation
from handrail.tools import default_registry
from handrail.topics import Topics, ensure_topics
from handrail_deploy.acl_formats import parse_json
from handrail_deploy.kafka_admin import apply_acls
from handrail_dev import DevInfraError, DevSettings, services
from handrail_dev.kafka import _run_sync
from handrail_dev.sasl import SaslKafka, sasl_files, start_sasl_kafka, stop_sasl_kafka

pytestmark = pytest.mark.timeout(180)

INTAKE, APPROVER = agent_principal("expense-intake"), agent_principal("expense-approver")
#: How long a consumer may take to join its group and fetch on a fresh single-node broker.
_READ_TIMEOUT_S = 20.0


def _free_port_pair() -> int:
    """A port p with p and p + 1 free (client and controller listeners)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 65535:
            with socket.socket() as other:
                try:
                    other.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of ports")


@pytest.fixture(scope="module")
def topics() -> Topics:
    return Topics(f"sasl{uuid.uuid4().hex[:8]}.")


@pytest.fixture(scope="module")
def rendered(topics: Topics) -> list[AclBinding]:
    """The ACLs exactly as `handrail acl render --format json` prints them."""
    env = {"HANDRAIL_CONFIG_DIR": str(PROJECT_ROOT / "config")}
    result = CliRunner().invoke(app, ["acl", "render", "--format", "json", "--prefix", topics.prefix], env=env)
    assert result.exit_code == 0, result.output
    return parse_json(result.output)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, topics: Topics, rendered: list[AclBinding]) -> Iterator[SaslKafka]:
    port = _free_port_pair()
    settings = DevSettings(kafka_bootstrap=f"127.0.0.1:{port}", run_dir=tmp_path_factory.mktemp("sasl-run"))
    try:
        kafka = start_sasl_kafka(settings, {r.principal for r in rendered})
    except DevInfraError as exc:
        unavailable(f"cannot start a SASL Kafka: {exc}")
    try:
        agents = load_contracts(PROJECT_ROOT / "config", default_registry().names()).agents
        _run_sync(apply_acls(kafka.bootstrap, kafka.admin, rendered))
        # handrail-admin can create the topics only because the ACLs just applied allow it.
        _run_sync(ensure_topics(kafka.bootstrap, topics.specs(agents), credentials=kafka.credentials(ADMIN)))
        yield kafka
    finally:
        stop_sasl_kafka(settings, wipe=True)


def cli_env(kafka: SaslKafka, topics: Topics, user: str) -> dict[str, str]:
    """The settings that make the CLI connect to ``kafka`` as principal ``user``."""
    credentials = kafka.credentials(user)
    return {
        "HANDRAIL_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "HANDRAIL_TOPIC_PREFIX": topics.prefix,
        "HANDRAIL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HANDRAIL_KAFKA_USERNAME": credentials.username,
        "HANDRAIL_KAFKA_PASSWORD": credentials.password,
    }


async def produce(kafka: SaslKafka, user: str, topic: str, value: dict[str, Any], key: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        enable_idempotence=True,
        acks="all",
        **kafka.credentials(user).client_options(),
    )
    try:
        await producer.start()
        await producer.send_and_wait(topic, json.dumps(value).encode(), key=key.encode())
    finally:
        await producer.stop()


async def consume(kafka: SaslKafka, user: str, topic: str, group: str | None, key: str) -> dict[str, Any]:
    """The first message keyed ``key`` on ``topic``, read as ``user`` in ``group`` (offset committed)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, **kafka.credentials(user).client_options(),
    )  # fmt: skip
    try:
        await consumer.start()
        async with asyncio.timeout(_READ_TIMEOUT_S):
            async for record in consumer:
                if record.key == key.encode():
                    if group is not None:
                        await consumer.commit()
                    return dict(json.loads(record.value or b"{}"))
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


async def test_every_hop_of_a_task_runs_with_its_own_principal(broker: SaslKafka, topics: Topics) -> None:
    task = f"task-{uuid.uuid4().hex[:8]}"
    t = topics
    await produce(broker, SUBMITTER, t.tasks, {"task_id": task}, task)
    # router: tasks -> step 1's agent
    assert (await consume(broker, ROUTER, t.tasks, ROUTER, task))["task_id"] == task
    await produce(broker, ROUTER, t.agent("expense-intake"), {"step": "intake"}, task)
    # worker expense-intake: its topic -> steps, events (never the audit trail)
    assert (await consume(broker, INTAKE, t.agent("expense-intake"), INTAKE, task))["step"] == "intake"
    for topic in (t.events, t.steps):
        await produce(broker, INTAKE, topic, {"step": "intake", "agent": "expense-intake"}, task)
    # validator: steps -> the step's audit record (in the agent's name) and step 2's agent
    assert (await consume(broker, VALIDATOR, t.steps, VALIDATOR, task))["step"] == "intake"
    await produce(broker, VALIDATOR, t.audit, {"actor": "agent:expense-intake", "agent": "expense-intake"}, task)
    await produce(broker, VALIDATOR, t.agent("expense-approver"), {"step": "decide"}, task)
    # worker expense-approver: its topic -> steps
    assert (await consume(broker, APPROVER, t.agent("expense-approver"), APPROVER, task))["step"] == "decide"
    await produce(broker, APPROVER, t.steps, {"step": "decide"}, task)
    # validator ends the task; the submitter reads its result; an operator reads the audit trail.
    await produce(broker, VALIDATOR, t.results, {"task_id": task, "status": "completed"}, task)
    assert (await consume(broker, SUBMITTER, t.results, None, task))["status"] == "completed"
    assert (await consume(broker, OPERATOR, t.audit, None, task))["agent"] == "expense-intake"


@pytest.mark.parametrize(
    ("user", "topic", "group"),
    [
        pytest.param(INTAKE, "agent.expense-approver", INTAKE, id="agent-A-reads-agent.B"),
        pytest.param(INTAKE, "agent.expense-approver", APPROVER, id="agent-A-reads-agent.B-in-Bs-group"),
        pytest.param(ROUTER, "agent.expense-intake", ROUTER, id="router-reads-an-agent-topic"),
        pytest.param(ROUTER, "steps", ROUTER, id="router-reads-steps"),
        pytest.param(VALIDATOR, "tasks", VALIDATOR, id="validator-reads-tasks"),
        pytest.param(SUBMITTER, "steps", None, id="submitter-reads-steps"),
    ],
)
async def test_reading_a_topic_one_may_not_read_is_refused(
    broker: SaslKafka, topics: Topics, user: str, topic: str, group: str | None
) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await consume(broker, user, f"{topics.prefix}{topic}", group, "any")


async def test_an_agent_cannot_use_another_consumer_group(broker: SaslKafka, topics: Topics) -> None:
    with pytest.raises(GroupAuthorizationFailedError):
        await consume(broker, INTAKE, topics.agent("expense-intake"), "handrail-validator", "any")


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        pytest.param(INTAKE, "results", id="agent-writes-results"),
        pytest.param(INTAKE, "agent.expense-approver", id="agent-A-writes-agent.B"),
        pytest.param(INTAKE, "tasks", id="agent-writes-tasks"),
        pytest.param(INTAKE, "control", id="agent-writes-control"),
        pytest.param(INTAKE, "audit", id="agent-writes-audit"),
        pytest.param(ROUTER, "agent.expense-approver", id="router-writes-a-later-steps-agent"),
        pytest.param(ROUTER, "steps", id="router-writes-steps"),
        pytest.param(SUBMITTER, "results", id="submitter-writes-results"),
        pytest.param(OPERATOR, "tasks", id="operator-submits"),
        pytest.param(OPERATOR, "results", id="operator-ends-a-task"),
    ],
)
async def test_writing_a_topic_one_may_not_write_is_refused(
    broker: SaslKafka, topics: Topics, user: str, topic: str
) -> None:
    # A principal that may write nowhere is refused earlier: its idempotent producer gets no producer id.
    with pytest.raises((TopicAuthorizationFailedError, ClusterAuthorizationFailedError)):
        await produce(broker, user, f"{topics.prefix}{topic}", {"forged": True}, "any")


async def test_an_agent_cannot_grant_itself_rights(
    broker: SaslKafka, topics: Topics, rendered: list[AclBinding]
) -> None:
    grab = AclBinding(INTAKE, rendered[0].resource_type, topics.results, rendered[0].operation)
    with pytest.raises(KafkaAdminError, match="ClusterAuthorizationFailedError"):
        await apply_acls(broker.bootstrap, broker.credentials(INTAKE), [grab])
    with pytest.raises(KafkaAdminError, match="TopicAuthorizationFailedError"):
        await ensure_topics(broker.bootstrap, Topics("grab.").specs([]), credentials=broker.credentials(INTAKE))


async def test_a_wrong_password_is_refused(broker: SaslKafka, topics: Topics) -> None:
    impostor = SaslCredentials(INTAKE, "not-the-password")
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, request_timeout_ms=5000, **impostor.client_options()
    )
    try:
        with pytest.raises(KafkaError):
            await producer.start()
    finally:
        await producer.stop()


def test_the_broker_keeps_credentials_private(broker: SaslKafka) -> None:
    for path in (broker.files.root / "credentials.json", broker.files.config):
        assert Path(path).stat().st_mode & 0o077 == 0, path


@pytest.fixture(scope="module")
def sasl_stack(
    broker: SaslKafka, topics: Topics, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Router, validator, circuit-breaker and one worker per agent, each as its own principal."""
    agents = sorted(load_contracts(PROJECT_ROOT / "config", default_registry().names()).agents)
    run_dir = tmp_path_factory.mktemp("sasl-stack")
    env = {
        "HANDRAIL_KAFKA_BOOTSTRAP": broker.bootstrap,
        "HANDRAIL_REDIS_URL": redis_url,
        "HANDRAIL_TOPIC_PREFIX": topics.prefix,
        "HANDRAIL_REDIS_PREFIX": f"{topics.prefix}:",
        "HANDRAIL_CONFIG_DIR": str(PROJECT_ROOT / "config"),
        "HANDRAIL_DATA_DIR": str(run_dir / "data"),
        "HANDRAIL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HANDRAIL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    }
    principal = {
        "router": ROUTER,
        "validator": VALIDATOR,
        "circuit-breaker": CIRCUIT_BREAKER,
        "human-review": HUMAN_REVIEW,
    }
    processes = []
    for planned in services.plan(agents):
        user = principal.get(planned.name) or agent_principal(planned.name.removeprefix("worker-"))
        credentials = {"HANDRAIL_KAFKA_USERNAME": user, "HANDRAIL_KAFKA_PASSWORD": broker.passwords[user]}
        processes.append(services.ServiceProcess(planned.name, planned.argv, free_port(), credentials))
    try:
        services.up(processes, run_dir, env, PROJECT_ROOT)
        yield
    finally:
        services.down(processes, run_dir)


async def test_the_services_run_end_to_end_as_their_own_principals(
    broker: SaslKafka, topics: Topics, sasl_stack: None
) -> None:
    """The real router, workers and validator, each with only its own ACLs, complete a task."""
    task = TaskSubmitted(
        task_id=f"sasl-{uuid.uuid4().hex[:8]}",
        workflow="expense-approval",
        input={"employee_id": "E100", "amount": 120, "currency": "USD", "description": "conference"},
        submitted_by="sasl-test",
    )
    await produce(broker, SUBMITTER, topics.tasks, task.model_dump(mode="json"), task.task_id)
    result = TaskResult.model_validate(await consume(broker, SUBMITTER, topics.results, None, task.task_id))
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.output is not None and result.output["decision"] == "approved"


def test_the_cli_connects_as_the_principal_its_settings_name(
    broker: SaslKafka, topics: Topics, sasl_stack: None
) -> None:
    """`handrail submit --wait` opens Kafka (producer and reader) with the HANDRAIL_KAFKA_* credentials."""
    env = cli_env(broker, topics, SUBMITTER)
    claim = json.dumps({"employee_id": "E100", "amount": 80, "currency": "USD", "description": "books"})

    submitted = handrail("submit", "-w", "expense-approval", "-i", claim, "--wait", "--timeout-s", "90", env=env)
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout.split("\n", 1)[1])["status"] == "completed"
    # Without its password the same command is refused by the broker, and says so.
    refused = handrail("submit", "-w", "expense-approval", "-i", claim, env={**env, "HANDRAIL_KAFKA_PASSWORD": "wrong"})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr


async def test_handrail_dev_sasl_up_applies_the_acls_and_down_wipes(tmp_path: Path) -> None:
    """`handrail dev sasl up` (as mounted) starts a broker, creates the topics, applies the ACLs; idempotent."""
    port = _free_port_pair()
    bootstrap = f"127.0.0.1:{port}"
    env = {"HANDRAIL_RUN_DIR": str(tmp_path), "HANDRAIL_CONFIG_DIR": str(PROJECT_ROOT / "config")}
    runner = CliRunner()
    up = ["sasl", "up", "--bootstrap", bootstrap, "--prefix", "cli."]
    try:
        first = await asyncio.to_thread(runner.invoke, app, up, env=env)
        if first.exit_code != 0 and "Maven" in first.output:
            unavailable(first.output)
        contracts = load_contracts(PROJECT_ROOT / "config", default_registry().names())
        expected = (
            f"{len(Topics('cli.').specs(contracts.agents))} topics created, "
            f"{len(acl_bindings(principals(contracts, Topics('cli.'))))} ACLs applied"
        )
        assert first.exit_code == 0 and expected in first.output, first.output
        again = await asyncio.to_thread(runner.invoke, app, up, env=env)
        assert again.exit_code == 0 and "0 topics created" in again.output, again.output
        passwords = json.loads((tmp_path / "kafka-sasl" / "credentials.json").read_text())
        kafka = SaslKafka(bootstrap, 0, sasl_files(DevSettings(run_dir=tmp_path)), passwords)
        await produce(kafka, SUBMITTER, "cli.tasks", {"task_id": "t"}, "t")
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(kafka, SUBMITTER, "cli.steps", {"forged": True}, "t")
    finally:
        down = await asyncio.to_thread(
            runner.invoke, app, ["sasl", "down", "--bootstrap", bootstrap, "--wipe"], env=env
        )
    assert down.exit_code == 0 and "stopped" in down.output
    assert not (tmp_path / "kafka-sasl").exists()


async def test_an_operator_halts_and_resumes_a_task_as_its_own_principal(
    broker: SaslKafka, topics: Topics, redis_url: str
) -> None:
    """`handrail halt` publishes the halt on control and the task's audit record as handrail-operator."""
    env = cli_env(broker, topics, OPERATOR)
    env |= {"HANDRAIL_REDIS_URL": redis_url, "HANDRAIL_REDIS_PREFIX": f"{topics.prefix}:"}
    task_id = f"drill-{uuid.uuid4().hex[:8]}"
    for args in (("halt", task_id, "--reason", "drill"), ("resume", task_id)):
        done = await asyncio.to_thread(handrail, *args, env=env, timeout_s=120)
        assert done.returncode == 0, done.stderr
    control = await consume(broker, OPERATOR, topics.control, None, f"halt:task:{task_id}")
    assert control["state"] == "halted" and control["reason"] == "drill"
    audited = await consume(broker, OPERATOR, topics.audit, None, task_id)
    assert audited["action"] == "halt.halted"


async def test_a_dead_letter_is_replayed_as_the_replayer_and_never_as_the_operator(
    broker: SaslKafka, topics: Topics, redis_url: str
) -> None:
    """`handrail dlq replay` sends a task back as handrail-replayer; handrail-operator may not publish tasks
    (it hands steps to agents for `task resume|fork`, never submits a task)."""
    task_id = f"replay-{uuid.uuid4().hex[:8]}"
    original = json.dumps({"task_id": task_id, "workflow": "expense-approval"}).encode()
    letter = DeadLetter(
        message_id=str(uuid.uuid4()), reason="drill", error_type="poison", source_topic=topics.tasks,
        partition=0, offset=0, original=base64.b64encode(original).decode(), task_id=task_id,
        service="worker-expense-intake", dead_lettered_at=utcnow(),
    )  # fmt: skip
    await produce(broker, INTAKE, topics.dlq, letter.model_dump(mode="json"), task_id)
    redis = {"HANDRAIL_REDIS_URL": redis_url, "HANDRAIL_REDIS_PREFIX": f"{topics.prefix}:"}
    state = connect_redis(redis_url)
    try:  # a deployment whose state is current: a new task is what the replay finds, not a lost one
        await generation.stamp(state, redis["HANDRAIL_REDIS_PREFIX"])
    finally:
        await state.aclose()
    args = ("dlq", "replay", letter.message_id, "--reason", "drill")

    refused = await asyncio.to_thread(handrail, *args, env=cli_env(broker, topics, OPERATOR) | redis, timeout_s=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "did not take it" in refused.stderr and "handrail-replayer" in refused.stderr
    replayed = await asyncio.to_thread(handrail, *args, env=cli_env(broker, topics, REPLAYER) | redis, timeout_s=120)
    assert replayed.returncode == 0 and "1 replayed" in replayed.stdout, replayed.stdout + replayed.stderr
    assert await consume(broker, ROUTER, topics.tasks, None, task_id) == json.loads(original)
