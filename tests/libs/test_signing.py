"""Signed envelopes: valid, forged, unsigned, wrong signer for the step, rotated keys, key loading."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from faststream.kafka import KafkaBroker, TestKafkaBroker
from pydantic import SecretStr

from handrail.bus import Delivery, Pipeline, Publisher
from handrail.contracts import load_contracts
from handrail.errors import ContractError, HandoffError, Rejected
from handrail.hashing import GENESIS, context_hash
from handrail.messages import DeadLetter, HandoffEnvelope, StepCompleted
from handrail.signing import (
    HandoffVerifier,
    KeyMaterialError,
    SignatureInvalid,
    SignatureMissing,
    Signer,
    SigningKey,
    TrustStore,
    UnknownSigner,
    Verifier,
    WrongSigner,
    load_signing_key,
    signing_bytes,
)
from handrail.state import Acceptance
from handrail.state.tasks import AcceptResult
from handrail.tools import default_registry

CONFIG = Path(__file__).resolve().parents[2] / "config"
SIGNERS = ("router", "validator", "expense-intake", "expense-approver")


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {name: SigningKey.generate(name) for name in SIGNERS}


@pytest.fixture(scope="module")
def trust(keys: dict[str, SigningKey]) -> TrustStore:
    return TrustStore({name: [key.public_key] for name, key in keys.items()})


@pytest.fixture(scope="module")
def handoffs(trust: TrustStore) -> HandoffVerifier:
    return HandoffVerifier(Verifier(trust), load_contracts(CONFIG, default_registry().names()))


def envelope(step_index: int = 0, sender: str = "router", **changes: Any) -> HandoffEnvelope:
    context = {"input": {"employee_id": "E100", "amount": 12.5, "currency": "EUR", "description": "lunch"}, "steps": {}}
    fields: dict[str, Any] = {
        "message_id": str(uuid.uuid4()),
        "task_id": f"t-{uuid.uuid4().hex[:8]}",
        "workflow": "expense-approval",
        "step": ["intake", "decide"][step_index],
        "step_index": step_index,
        "sender": sender,
        "receiver": ["expense-intake", "expense-approver"][step_index],
        "deadline": datetime(2030, 1, 1, tzinfo=UTC),
        "goal": "Decide on the claim",
        "context": context,
        "context_hash": context_hash(context),
        "parent_hash": GENESIS,
        "idempotency_key": "k/1",
    }
    return HandoffEnvelope(**{**fields, **changes})


def step_report_bytes(
    signer: Signer | None, *, step: str = "intake", agent: str = "expense-intake"
) -> tuple[Any, bytes]:
    """A StepCompleted as published, signed by ``signer`` (StepCompleted has no signature field yet: add it)."""
    context = {"steps": {step: {"ok": True}}}
    report = StepCompleted(
        message_id=str(uuid.uuid4()),
        task_id="t-1",
        workflow="expense-approval",
        step=step,
        step_index=0 if step == "intake" else 1,
        attempt=1,
        agent=agent,
        goal="g",
        output={"ok": True},
        context=context,
        context_hash=context_hash(context),
        parent_hash=GENESIS,
        patch=[],
        finished_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    document = json.loads(report.to_bytes())
    if signer is not None:
        document["signature"] = signer.signature_for(document)
    return report, json.dumps(document).encode()


def test_a_signed_envelope_verifies_from_its_published_bytes(
    keys: dict[str, SigningKey], handoffs: HandoffVerifier
) -> None:
    signed = Signer(keys["router"]).sign(envelope())
    assert signed.signature is not None and signed.signature.startswith(f"v1:router:{keys['router'].key_id}:")
    assert handoffs.check_handoff(signed, signed.to_bytes()) == "router"


def test_signed_bytes_are_the_signed_payload_as_published_serialised_once(
    keys: dict[str, SigningKey], handoffs: HandoffVerifier
) -> None:
    payload = envelope()
    signer = Signer(keys["router"])
    published = signer.signed_bytes(payload)
    assert json.loads(published) == json.loads(signer.sign(payload).to_bytes())
    assert handoffs.check_handoff(HandoffEnvelope.model_validate_json(published), published) == "router"
    # A signature the payload carried already is replaced, not signed over.
    stale = payload.model_copy(update={"signature": "v1:router:old:x"})
    assert json.loads(signer.signed_bytes(stale))["signature"] == json.loads(published)["signature"]


def test_the_signature_is_over_canonical_json_not_the_byte_layout(
    keys: dict[str, SigningKey], trust: TrustStore
) -> None:
    signed = Signer(keys["router"]).sign(envelope())
    document = json.loads(signed.to_bytes())
    # Another producer may order keys and space its JSON differently: RFC 8785 makes that irrelevant.
    relaid = json.dumps(dict(reversed(list(document.items()))), indent=3).encode()
    assert Verifier(trust).verify_bytes(relaid, expected={"router"}) == "router"
    assert signing_bytes(document).startswith(b"handrail-signature-v1\n{")


def test_an_altered_context_is_signature_invalid(keys: dict[str, SigningKey], handoffs: HandoffVerifier) -> None:
    signed = Signer(keys["router"]).sign(envelope())
    document = json.loads(signed.to_bytes())
    document["context"]["input"]["amount"] = 12000
    with pytest.raises(SignatureInvalid, match="altered after signing, or forged") as caught:
        handoffs.check_handoff(signed, json.dumps(document).encode())
    assert caught.value.error_type == "signature_invalid" and caught.value.task_id == signed.task_id
    assert isinstance(caught.value, HandoffError) and isinstance(caught.value, Rejected)


def test_an_unsigned_envelope_is_signature_missing(handoffs: HandoffVerifier) -> None:
    unsigned = envelope()
    with pytest.raises(SignatureMissing) as caught:
        handoffs.check_handoff(unsigned, unsigned.to_bytes())
    assert caught.value.error_type == "signature_missing" and caught.value.task_id == unsigned.task_id


def test_during_a_roll_out_unsigned_passes_but_a_bad_signature_never_does(
    keys: dict[str, SigningKey], handoffs: HandoffVerifier
) -> None:
    lenient = HandoffVerifier(handoffs.verifier, handoffs.contracts, required=False)
    unsigned = envelope()
    assert lenient.check_handoff(unsigned, unsigned.to_bytes()) is None
    signed = Signer(keys["router"]).sign(envelope())
    assert lenient.check_handoff(signed, signed.to_bytes()) == "router"
    forged = Signer(SigningKey.generate("router")).sign(envelope())
    with pytest.raises(SignatureInvalid):
        lenient.check_handoff(forged, forged.to_bytes())


def test_a_forged_key_claiming_to_be_the_router_is_rejected(handoffs: HandoffVerifier) -> None:
    forger = Signer(SigningKey.generate("router"))  # right name, wrong key
    forged = forger.sign(envelope())
    with pytest.raises(SignatureInvalid, match="not one of its trusted keys"):
        handoffs.check_handoff(forged, forged.to_bytes())


def test_a_forged_signature_under_the_real_key_id_is_rejected(
    keys: dict[str, SigningKey], handoffs: HandoffVerifier
) -> None:
    real = Signer(keys["router"]).sign(envelope())
    assert real.signature is not None
    prefix = real.signature.rsplit(":", 1)[0]
    fake = base64.urlsafe_b64encode(bytes(64)).decode().rstrip("=")
    forged = real.model_copy(update={"signature": f"{prefix}:{fake}"})
    with pytest.raises(SignatureInvalid):
        handoffs.check_handoff(forged, forged.to_bytes())


@pytest.mark.parametrize(
    "text", ["garbage", "v2:router:abc:def", "v1:router::xx", "v1:router:abcd:!!!!", "v1:a b:k:AAAA"]
)
def test_malformed_signatures_are_signature_invalid(handoffs: HandoffVerifier, text: str) -> None:
    bad = envelope(signature=text)
    with pytest.raises(SignatureInvalid, match="malformed"):
        handoffs.check_handoff(bad, bad.to_bytes())


def test_an_unknown_signer_is_rejected(handoffs: HandoffVerifier) -> None:
    stranger = Signer(SigningKey.generate("mallory")).sign(envelope(sender="mallory"))
    with pytest.raises(UnknownSigner) as caught:
        handoffs.check_handoff(stranger, stranger.to_bytes())
    assert caught.value.error_type == "unknown_signer"


def test_only_the_validator_may_hand_over_a_later_step(keys: dict[str, SigningKey], handoffs: HandoffVerifier) -> None:
    by_validator = Signer(keys["validator"]).sign(envelope(step_index=1, sender="validator"))
    assert handoffs.check_handoff(by_validator, by_validator.to_bytes()) == "validator"

    by_router = Signer(keys["router"]).sign(envelope(step_index=1, sender="router"))
    # Besides the validator: human review (a decision) and the operator (`handrail task resume|fork`).
    with pytest.raises(WrongSigner, match="only 'human-review', 'operator', 'validator' may send") as caught:
        handoffs.check_handoff(by_router, by_router.to_bytes())
    assert caught.value.error_type == "wrong_signer"


def test_a_validly_signed_envelope_that_lies_about_its_sender_is_wrong_signer(
    keys: dict[str, SigningKey], handoffs: HandoffVerifier
) -> None:
    lying = Signer(keys["router"]).sign(envelope(step_index=1, sender="validator"))
    with pytest.raises(WrongSigner, match="claims to come from 'validator'"):
        handoffs.check_handoff(lying, lying.to_bytes())


def test_an_agent_cannot_sign_another_agents_step(keys: dict[str, SigningKey], handoffs: HandoffVerifier) -> None:
    report, value = step_report_bytes(Signer(keys["expense-intake"]), step="intake", agent="expense-intake")
    assert handoffs.check_step(report, value) == "expense-intake"

    # expense-intake reports the `decide` step as itself: the workflow binds `decide` to expense-approver.
    report, value = step_report_bytes(Signer(keys["expense-intake"]), step="decide", agent="expense-intake")
    with pytest.raises(WrongSigner, match="only 'expense-approver' may send"):
        handoffs.check_step(report, value)
    # ... or pretends to be expense-approver: its valid signature still names itself.
    report, value = step_report_bytes(Signer(keys["expense-intake"]), step="decide", agent="expense-approver")
    with pytest.raises(WrongSigner, match="claims to come from 'expense-approver'"):
        handoffs.check_step(report, value)


def test_rotation_two_keys_are_trusted_at_once_and_a_removed_key_is_rejected(keys: dict[str, SigningKey]) -> None:
    old, new = keys["expense-intake"], SigningKey.generate("expense-intake")
    during = Verifier(TrustStore({"expense-intake": [old.public_key, new.public_key]}))
    after = Verifier(TrustStore({"expense-intake": [new.public_key]}))
    signed_old = Signer(old).sign(envelope(sender="expense-intake"))
    signed_new = Signer(new).sign(envelope(sender="expense-intake"))

    for signed in (signed_old, signed_new):
        assert during.verify(signed, expected={"expense-intake"}) == "expense-intake"
    assert after.verify(signed_new, expected={"expense-intake"}) == "expense-intake"
    with pytest.raises(SignatureInvalid, match="rotated out, or forged"):
        after.verify(signed_old, expected={"expense-intake"})


def test_a_third_trusted_key_is_refused() -> None:
    three = [SigningKey.generate("a").public_key for _ in range(3)]
    with pytest.raises(KeyMaterialError, match="at most 2"):
        TrustStore({"a": three})


def test_keys_load_from_files_and_from_env_secrets(tmp_path: Path, keys: dict[str, SigningKey]) -> None:
    key = keys["expense-approver"]
    (tmp_path / "approver.pem").write_bytes(key.private_pem())
    from_file = load_signing_key("expense-approver", key_file=tmp_path / "approver.pem")
    seed = key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    from_env = load_signing_key("expense-approver", key=SecretStr(base64.b64encode(seed).decode()))
    from_pem_env = load_signing_key("expense-approver", key=key.private_pem().decode())
    assert from_file.key_id == from_env.key_id == from_pem_env.key_id == key.key_id

    with pytest.raises(KeyMaterialError, match="32 bytes"):
        load_signing_key("x", key=base64.b64encode(b"short").decode())
    with pytest.raises(KeyMaterialError, match="cannot read"):
        load_signing_key("x", key_file=tmp_path / "missing.pem")
    with pytest.raises(KeyMaterialError, match="exactly one"):
        load_signing_key("x")


def test_trust_store_from_a_directory_of_pub_files_and_from_json(tmp_path: Path, keys: dict[str, SigningKey]) -> None:
    next_key = SigningKey.generate("router")
    (tmp_path / "router.pub").write_bytes(keys["router"].public_pem() + next_key.public_pem())
    (tmp_path / "validator.pub").write_bytes(keys["validator"].public_pem())
    store = TrustStore.from_file(tmp_path)
    assert store.signers == ["router", "validator"]
    assert set(store.keys_for("router")) == {keys["router"].key_id, next_key.key_id}

    as_json = store.to_json()
    (tmp_path / "trusted.json").write_text(as_json)
    assert TrustStore.from_file(tmp_path / "trusted.json").to_mapping() == store.to_mapping()
    assert TrustStore.from_text(as_json).to_mapping() == store.to_mapping()
    with pytest.raises(KeyMaterialError, match="not an Ed25519 public key"):
        TrustStore.from_text('{"router": ["bm90IGEga2V5"]}')


def test_agent_names_may_not_shadow_service_signers(trust: TrustStore, tmp_path: Path) -> None:
    contracts = load_contracts(CONFIG, default_registry().names())
    renamed = type(contracts)(agents={**contracts.agents, "router": contracts.agent("expense-intake")}, workflows={})
    with pytest.raises(ContractError, match="reserved for platform services"):
        HandoffVerifier(Verifier(trust), renamed)


class _AcceptingStore:
    """Stands in for the Redis task store: every parent hash matches."""

    async def accept(self, *args: Any) -> AcceptResult:
        return AcceptResult(Acceptance.ACCEPTED, "")

    async def mark_done(self, *args: Any) -> None:
        return None


@pytest.mark.parametrize(
    ("make", "error_type"),
    [
        (lambda keys: envelope(), "signature_missing"),
        (lambda keys: Signer(SigningKey.generate("router")).sign(envelope()), "signature_invalid"),
        (lambda keys: Signer(keys["router"]).sign(envelope(step_index=1, sender="router")), "wrong_signer"),
    ],
)
async def test_the_pipeline_dead_letters_a_refused_signature_with_its_reason(
    keys: dict[str, SigningKey], handoffs: HandoffVerifier, make: Any, error_type: str
) -> None:
    """In the pipeline (in-memory broker): a refused envelope is never handled, and is parked with the reason."""
    broker = KafkaBroker()
    handled: list[str] = []
    letters: list[DeadLetter] = []
    pipeline = Pipeline(service="worker-x", publisher=Publisher(broker), store=_AcceptingStore(), dlq_topic="dlq")  # type: ignore[arg-type]

    async def handler(payload: HandoffEnvelope, delivery: Delivery) -> None:
        handoffs.check_handoff(payload, delivery.value)  # where the pipeline will call it, before any handler
        handled.append(payload.task_id)

    pipeline.subscribe("agent.x", group_id="g", payload_type=HandoffEnvelope, handler=handler, topic_kind="agent")

    @broker.subscriber("dlq", group_id="dlq-reader")
    async def on_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    message = make(keys)
    delivery = Delivery("agent.x", 0, 0, message.task_id, message.to_bytes())
    async with TestKafkaBroker(broker):
        await pipeline.process(pipeline.subscriptions[0], delivery, attempt=1)
    assert handled == []
    assert [(d.error_type, d.task_id) for d in letters] == [(error_type, message.task_id)]
    assert base64.b64decode(letters[0].original) == message.to_bytes() and letters[0].reason
