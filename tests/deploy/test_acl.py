"""`handrail acl render`: least privilege, rendered from the contracts (the broker side is tests/dev/test_sasl.py)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from tests.deploy.helpers import PROJECT_ROOT, app
from typer.testing import CliRunner

from handrail.bus import acl
from handrail.bus.acl import AclBinding, Operation, PatternType, ResourceType
from handrail.contracts import Contracts, load_contracts
from handrail.tools import default_registry
from handrail.topics import Topics
from handrail_deploy import acl_formats

ENV = {"HANDRAIL_CONFIG_DIR": str(PROJECT_ROOT / "config"), "HANDRAIL_TOPIC_PREFIX": "handrail."}


@pytest.fixture(scope="module")
def contracts() -> Contracts:
    return load_contracts(PROJECT_ROOT / "config", default_registry().names())


@pytest.fixture(scope="module")
def rules(contracts: Contracts) -> list[AclBinding]:
    return acl.bindings(acl.principals(contracts, Topics("handrail.")))


def allowed(rules: list[AclBinding], principal: str, operation: Operation) -> set[str]:
    return {
        r.resource_name
        for r in rules
        if r.principal == principal and r.operation == operation and r.resource_type == ResourceType.TOPIC
    }


#: The agents of config/agents.yaml: the demo's two workflows.
AGENTS = ("expense-intake", "expense-approver", "vendor-checker", "risk-classifier", "vendor-writer")
#: What every service reads besides its own inputs: the record Redis is rebuilt from.
STATE_TOPICS = {"handrail.audit", "handrail.results", "handrail.control"}


def test_an_agent_reads_only_its_own_topic_and_writes_only_its_outputs(rules: list[AclBinding]) -> None:
    for agent in ("expense-intake", "expense-approver"):
        principal = f"handrail-agent-{agent}"
        # only its own topic: workers never rebuild Redis, so they need no audit, results or control
        assert allowed(rules, principal, Operation.READ) == {f"handrail.agent.{agent}"}
        # never the audit trail: the validator records each step an agent completed, in its name
        assert allowed(rules, principal, Operation.WRITE) == {"handrail.steps", "handrail.events", "handrail.dlq"}
        groups = {r.resource_name for r in rules if r.principal == principal and r.resource_type == ResourceType.GROUP}
        assert groups == {principal}
        assert all(r.pattern_type == PatternType.LITERAL for r in rules if r.principal == principal)


def test_the_router_cannot_read_agent_topics(rules: list[AclBinding]) -> None:
    assert allowed(rules, acl.ROUTER, Operation.READ) == {"handrail.tasks", *STATE_TOPICS}
    # It hands only first steps over: expense-intake, never expense-approver.
    assert "handrail.agent.expense-intake" in allowed(rules, acl.ROUTER, Operation.WRITE)
    assert "handrail.agent.expense-approver" not in allowed(rules, acl.ROUTER, Operation.WRITE)


def test_only_the_validator_and_human_review_hand_later_steps_and_end_tasks(rules: list[AclBinding]) -> None:
    assert allowed(rules, acl.VALIDATOR, Operation.READ) == {"handrail.steps", *STATE_TOPICS}
    assert "handrail.agent.expense-approver" in allowed(rules, acl.VALIDATOR, Operation.WRITE)
    writers_of_results = {
        r.principal for r in rules if r.resource_name == "handrail.results" and r.operation == "WRITE"
    }
    assert writers_of_results == {acl.ROUTER, acl.VALIDATOR, acl.HUMAN_REVIEW}


def test_only_the_replayer_sends_dead_letters_back_and_the_operator_still_cannot(rules: list[AclBinding]) -> None:
    assert allowed(rules, acl.REPLAYER, Operation.READ) == {"handrail.dlq"}
    agent_topics = {f"handrail.agent.{a}" for a in AGENTS}
    assert (
        allowed(rules, acl.REPLAYER, Operation.WRITE)
        == {"handrail.tasks", "handrail.steps", "handrail.audit"} | agent_topics
    )
    # The operator hands steps on from checkpoints (task resume|fork), but never publishes a task or a step.
    assert allowed(rules, acl.OPERATOR, Operation.WRITE) == {"handrail.control", "handrail.audit"} | agent_topics
    assert not [r for r in rules if r.principal == acl.REPLAYER and r.resource_type == ResourceType.GROUP]


def test_nobody_gets_wildcards_or_cluster_rights(rules: list[AclBinding]) -> None:
    assert all(r.resource_name not in ("*", "") for r in rules)
    prefixed = {(r.principal, r.operation) for r in rules if r.pattern_type == PatternType.PREFIXED}
    assert prefixed == {
        (acl.OPERATOR, Operation.READ),
        (acl.ADMIN, Operation.CREATE), (acl.ADMIN, Operation.DESCRIBE), (acl.ADMIN, Operation.DESCRIBE_CONFIGS),
    }  # fmt: skip


def test_a_new_agent_gets_its_own_principal(contracts: Contracts) -> None:
    extra = contracts.agent("expense-intake").model_copy(update={"name": "fraud-check"})
    more = Contracts(agents={**contracts.agents, "fraud-check": extra}, workflows=contracts.workflows)
    rules = acl.bindings(acl.principals(more, Topics("x.")))
    reads = allowed(rules, "handrail-agent-fraud-check", Operation.READ)
    assert reads == {"x.agent.fraud-check"}
    # No workflow hands it a step yet: nobody may write its topic but human review and the operators (who
    # resume and fork tasks from a checkpoint: `handrail task resume|fork`).
    writers = {r.principal for r in rules if r.resource_name == "x.agent.fraud-check" and r.operation == "WRITE"}
    assert writers == {acl.HUMAN_REVIEW, acl.OPERATOR}


def test_json_output_round_trips(rules: list[AclBinding]) -> None:
    result = CliRunner().invoke(app, ["acl", "render", "--format", "json"], env=ENV)
    assert result.exit_code == 0, result.output
    assert acl_formats.parse_json(result.output) == rules
    assert json.loads(result.output)[0]["principal"].startswith("User:")


def test_kafka_acls_script_is_valid_shell(rules: list[AclBinding]) -> None:
    result = CliRunner().invoke(app, ["acl", "render", "--format", "kafka-acls"], env=ENV)
    assert result.exit_code == 0
    lines = [ln for ln in result.output.splitlines() if ln.startswith("kafka-acls.sh")]
    assert len(lines) == len(rules)
    assert subprocess.run(["sh", "-n"], input=result.output, text=True, check=False).returncode == 0
    assert any("--operation DescribeConfigs --topic handrail. --resource-pattern-type prefixed" in ln for ln in lines)


def test_strimzi_users_carry_the_same_acls(rules: list[AclBinding]) -> None:
    result = CliRunner().invoke(app, ["acl", "render", "--format", "strimzi", "--namespace", "prod"], env=ENV)
    users = list(yaml.safe_load_all(result.output))
    assert {u["metadata"]["name"] for u in users} == {r.principal for r in rules}
    assert sum(len(u["spec"]["authorization"]["acls"]) for u in users) == len(rules)
    assert all(u["spec"]["authentication"]["type"] == "scram-sha-512" for u in users)


def test_the_table_names_every_principal(rules: list[AclBinding]) -> None:
    result = CliRunner().invoke(app, ["acl", "render"], env={**ENV, "COLUMNS": "250"})
    assert result.exit_code == 0
    for principal in {r.principal for r in rules}:
        assert f"User:{principal}" in result.output
