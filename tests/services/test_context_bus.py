"""Context views through a real worker on real Kafka and Redis: the agent is shown only its step's view,
the task context travels whole with its hash chain, and the view's hash is in the audit trail (and its trace)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from tests.fixtures.cli import handrail
from tests.fixtures.stack import Stack, merged_config

from handrail.client import HandrailClient
from handrail.hashing import context_hash
from handrail.messages import HandoffEnvelope, StepCompleted, TaskStatus
from handrail_dev import signing_keys

pytestmark = [pytest.mark.bus, pytest.mark.timeout(240)]

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def stack_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's contracts plus an agent that answers with the context it was shown."""
    return merged_config(tmp_path_factory.mktemp("context-config"), "context")


async def test_a_step_sees_only_its_view_and_the_context_travels_whole(client: HandrailClient, stack: Stack) -> None:
    claim = {"employee_id": "E101", "amount": 42, "currency": "EUR", "description": "a private note"}
    task_id = await client.submit("view-test", claim, task_id=f"view-{uuid.uuid4().hex[:10]}")
    result = await client.wait_for_result(task_id, timeout_s=90)
    assert result.status == TaskStatus.COMPLETED, result.reason

    peek, after = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
    shown = {"input": {"amount": 42, "currency": "EUR"}}
    # The agent of `peek` was shown the amount and nothing else (the scripted model answers with what it saw) ...
    assert peek.output == {"seen": shown}
    # ... while the context it handed on is the whole task context, chained on the hash it received.
    assert peek.context == {"input": claim, "steps": {"peek": {"seen": shown}}}
    assert after.parent_hash == peek.context_hash == context_hash(peek.context)
    # The next step, with no view, is shown everything: nothing was lost on the way.
    assert after.output == {"seen": {"input": claim, "steps": {"peek": {"seen": shown}}}}
    assert result.output == after.output

    audit = [json.loads(v) for v in await stack.read(stack.topics.audit, task_id, settle_s=1.0)]
    steps = {r["step"]: r for r in audit if r["action"] == "step.completed"}
    seen = steps["peek"]["details"]["context_seen"]
    assert seen["view"] == "amount-only" and seen["pointers"] == ["/input/amount", "/input/currency"]
    assert seen["view_hash"] == context_hash(shown)
    # The chain of context hashes is the one the envelopes carried, view or no view.
    first, second = [
        HandoffEnvelope.model_validate_json(v) for v in await stack.read(stack.topics.agent("viewer"), task_id)
    ]
    assert first.context["input"] == claim  # the envelope carried the whole context to the viewing step
    assert steps["peek"]["input_hash"] == first.context_hash == context_hash(first.context)
    assert second.context == peek.context and second.context_hash == peek.context_hash
    assert steps["after"]["input_hash"] == steps["peek"]["output_hash"] == peek.context_hash
    # A step without a view records the hash of the whole context it was shown.
    assert steps["after"]["details"]["context_seen"]["view_hash"] == peek.context_hash
    assert "pointers" not in steps["after"]["details"]["context_seen"]

    env = {
        "HANDRAIL_KAFKA_BOOTSTRAP": stack.bootstrap,
        "HANDRAIL_TOPIC_PREFIX": stack.topics.prefix,
        "HANDRAIL_TRUSTED_KEYS_FILE": str(stack.run_dir / signing_keys.FOLDER),
    }
    traced = handrail("trace", task_id, env=env)
    assert traced.returncode == 0, traced.stderr
    assert f"shown amount-only  view {context_hash(shown)[:10]}" in traced.stdout, traced.stdout
