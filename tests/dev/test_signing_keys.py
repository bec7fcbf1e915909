"""Every local stack runs signed: one key per signer in the run dir, made once, and a refusal to run without."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from handrail.contracts import load_contracts
from handrail.errors import ContractError
from handrail.service.runtime import _signing
from handrail.service.settings import ServiceSettings
from handrail.signing import Signer, TrustStore, Verifier, load_signing_key
from handrail.tools import default_registry
from handrail_dev import services
from handrail_dev.signing_keys import ensure_keys, signing_env

CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_each_process_of_a_plan_gets_its_own_key_and_the_stack_trust_store(tmp_path: Path) -> None:
    plan = services.plan(["expense-intake", "expense-approver"])
    folder = ensure_keys(tmp_path, [p.signer for p in plan])
    assert sorted(p.signer for p in plan) == sorted(f.stem for f in folder.glob("*.pem"))
    assert all((f.stat().st_mode & 0o777) == 0o600 for f in folder.glob("*.pem"))
    trust = TrustStore.from_file(folder)
    for process in plan:
        env = signing_env(process.signer, tmp_path, {})
        key = load_signing_key(process.signer, key_file=Path(env["HANDRAIL_SIGNING_KEY_FILE"]))
        signed = Signer(key).signature_for({"task_id": "t1", "n": 1})
        assert Verifier(trust).verify_document({"task_id": "t1", "n": 1, "signature": signed}) == process.signer


def test_keys_are_made_once_and_reused_across_restarts(tmp_path: Path) -> None:
    folder = ensure_keys(tmp_path, ["router"])
    first = (folder / "router.pem").read_bytes()
    ensure_keys(tmp_path, ["router", "validator"])
    assert (folder / "router.pem").read_bytes() == first
    assert (folder / "router.pub").read_bytes().count(b"BEGIN PUBLIC KEY") == 1


def test_what_the_caller_sets_is_left_alone(tmp_path: Path) -> None:
    own = {"HANDRAIL_SIGNING_KEY_FILE": "/secrets/router.pem", "HANDRAIL_TRUSTED_KEYS": "{}"}
    assert signing_env("router", tmp_path, own) == {}
    assert set(signing_env("router", tmp_path, {"HANDRAIL_TRUSTED_KEYS": "{}"})) == {"HANDRAIL_SIGNING_KEY_FILE"}


def test_a_service_without_keys_refuses_to_start_and_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("SIGNING_KEY", "SIGNING_KEY_FILE", "TRUSTED_KEYS", "TRUSTED_KEYS_FILE", "SIGNING_REQUIRED"):
        monkeypatch.delenv(f"HANDRAIL_{variable}", raising=False)
    contracts = load_contracts(CONFIG, default_registry().names())
    settings = ServiceSettings()
    assert settings.signing_required  # the default
    with pytest.raises(ContractError) as refused:
        _signing("validator", settings, contracts)
    message = str(refused.value)
    assert "no a signing key" not in message
    assert "HANDRAIL_SIGNING_KEY_FILE" in message and "HANDRAIL_TRUSTED_KEYS_FILE" in message
    assert "handrail keys generate validator" in message and "HANDRAIL_SIGNING_REQUIRED=false" in message


def test_running_unsigned_is_explicit_and_logged(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    contracts = load_contracts(CONFIG, default_registry().names())
    with caplog.at_level(logging.WARNING):
        signer, verifier = _signing("router", ServiceSettings(signing_required=False), contracts)
    assert signer is None and verifier is None
    assert "HANDRAIL_SIGNING_REQUIRED=false" in caplog.text and "never run production" in caplog.text


def test_a_second_replica_of_a_worker_signs_as_its_agent() -> None:
    worker = next(p for p in services.plan(["expense-intake"]) if p.name == "worker-expense-intake")
    replica = services.ServiceProcess("worker-expense-intake-2", worker.argv, 0)
    assert worker.signer == replica.signer == "expense-intake"
    for service in services.plan([]):
        assert services.ServiceProcess(f"{service.name}-2", service.argv, 0).signer == service.name
