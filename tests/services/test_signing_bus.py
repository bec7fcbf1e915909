"""Signed envelopes on the real bus, as every stack runs by default: each hop signed by its sender,
forged or unsigned hops dead-lettered."""

from __future__ import annotations

import uuid

import pytest
from tests.fixtures.stack import Stack

from handrail.client import HandrailClient
from handrail.messages import HandoffEnvelope, StepCompleted, TaskStatus
from handrail.signing import Signer, SigningKey

pytestmark = [pytest.mark.bus, pytest.mark.timeout(180)]

APPROVER = "worker-expense-approver"


def claim(amount: float) -> dict[str, object]:
    return {"employee_id": "E100", "amount": amount, "currency": "USD", "description": "mouse"}


async def test_every_hop_is_signed_by_its_sender(client: HandrailClient, stack: Stack) -> None:
    task_id = await client.submit("expense-approval", claim(25), task_id=f"signed-{uuid.uuid4().hex[:8]}")
    assert (await client.wait_for_result(task_id, timeout_s=60)).status == TaskStatus.COMPLETED
    envelopes = [
        HandoffEnvelope.model_validate_json(v) for v in await stack.read(stack.topics.agent("expense-intake"), task_id)
    ]
    assert (envelopes[0].signature or "").startswith("v1:router:")
    later = [
        HandoffEnvelope.model_validate_json(v)
        for v in await stack.read(stack.topics.agent("expense-approver"), task_id)
    ]
    assert (later[0].signature or "").startswith("v1:validator:")
    steps = [StepCompleted.model_validate_json(v) for v in await stack.read(stack.topics.steps, task_id)]
    assert [s.signature.split(":")[1] for s in steps if s.signature] == ["expense-intake", "expense-approver"]


async def _replace_next_hop(client: HandrailClient, stack: Stack, label: str, forge: object) -> tuple[str, bytes]:
    # the forged bytes are returned for debugging a failure; the tests check what the platform made of them
    """Park a task before its second step, lose the real envelope, and deliver ``forge(envelope)`` instead."""
    stack.stop(APPROVER)
    try:
        task_id = await client.submit("expense-approval", claim(40), task_id=f"{label}-{uuid.uuid4().hex[:8]}")
        values: list[bytes] = []
        for _ in range(60):
            values = await stack.read(stack.topics.agent("expense-approver"), task_id)
            if values:
                break
        envelope = HandoffEnvelope.model_validate_json(values[-1])
        await stack.skip_pending(stack.group("agent-expense-approver"), stack.topics.agent("expense-approver"))
        forged: bytes = forge(envelope)  # type: ignore[operator]
        await stack.produce(stack.topics.agent("expense-approver"), forged, key=task_id)
    finally:
        stack.start(APPROVER)
    return task_id, forged


@pytest.mark.parametrize(
    ("label", "error_type"),
    [
        ("unsigned", "signature_missing"),
        ("impostor", "signature_invalid"),
        ("agent-as-validator", "wrong_signer"),
        ("tampered", "signature_invalid"),
    ],
)
async def test_a_forged_or_unsigned_hop_is_dead_lettered(
    client: HandrailClient, stack: Stack, label: str, error_type: str
) -> None:
    def forge(envelope: HandoffEnvelope) -> bytes:
        if label == "unsigned":
            return envelope.model_copy(update={"signature": None}).to_bytes()
        if label == "impostor":  # a key nobody trusts, claiming to be the validator
            return (
                Signer(SigningKey.generate("validator"))
                .sign(envelope.model_copy(update={"signature": None}))
                .to_bytes()
            )
        if label == "agent-as-validator":  # a trusted key, but not one that may hand over step 2
            return stack.signer("expense-intake").sign(envelope.model_copy(update={"signature": None})).to_bytes()
        # A real signature over different content: the budget was raised after signing.
        richer = envelope.budget.model_copy(update={"max_cost_usd": 1000.0})
        return envelope.model_copy(update={"budget": richer}).to_bytes()

    task_id, _ = await _replace_next_hop(client, stack, label, forge)
    result = await client.wait_for_result(task_id, timeout_s=60)
    assert result.status == TaskStatus.FAILED and result.error_type == error_type, result.reason
    letters = await stack.dead_letters_for(task_id)
    assert [letter.error_type for letter in letters] == [error_type]
