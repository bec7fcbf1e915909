"""`handrail keys generate | trust`: key files a Secret and a ConfigMap can hold, and rotation."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.helpers import app
from typer.testing import CliRunner

from handrail.signing import Signer, TrustStore, Verifier, load_signing_key


def test_generate_then_trust_then_rotate(tmp_path: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    result = runner.invoke(app, ["keys", "generate", "router", "expense-intake", "--out", str(keys)])
    assert result.exit_code == 0, result.output
    assert (keys / "router.pem").stat().st_mode & 0o077 == 0  # a secret: owner only

    trusted = runner.invoke(app, ["keys", "trust", str(keys)])
    store = TrustStore.from_text(trusted.output)
    assert store.signers == ["expense-intake", "router"]

    # Rotation: the old private key moves away, a new one is generated, both public keys are trusted.
    old = load_signing_key("router", key_file=keys / "router.pem")
    (keys / "router.pem").rename(tmp_path / "router.old.pem")
    assert runner.invoke(app, ["keys", "generate", "router", "--out", str(keys)]).exit_code == 0
    new = load_signing_key("router", key_file=keys / "router.pem")
    both = TrustStore.from_text(runner.invoke(app, ["keys", "trust", str(keys)]).output)
    assert set(both.keys_for("router")) == {old.key_id, new.key_id}
    verifier = Verifier(both)
    for key in (old, new):
        document = {"task_id": "t", "sender": "router"}
        document["signature"] = Signer(key).signature_for(document)
        assert verifier.verify_document(document) == "router"


def test_generate_refuses_to_overwrite_a_private_key(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["keys", "generate", "router", "--out", str(tmp_path)]).exit_code == 0
    again = runner.invoke(app, ["keys", "generate", "router", "--out", str(tmp_path)])
    assert again.exit_code == 1 and "exists" in again.output
    bad = runner.invoke(app, ["keys", "generate", "no way", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "not a valid signer name" in bad.output


def test_keep_existing_makes_only_the_missing_keys(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["keys", "generate", "router", "--out", str(tmp_path)]).exit_code == 0
    router = (tmp_path / "router.pem").read_bytes()
    again = runner.invoke(app, ["keys", "generate", "--keep-existing", "--out", str(tmp_path), "router", "validator"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "router.pem").read_bytes() == router and (tmp_path / "validator.pem").exists()
    assert TrustStore.from_file(tmp_path).signers == ["router", "validator"]
