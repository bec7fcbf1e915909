"""The AsyncAPI document: current, AsyncAPI 3 in shape, and true to the topics, the models and the ACLs."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from handrail.asyncapi import document, render, stale
from handrail.asyncapi.__main__ import main
from handrail.bus import acl
from handrail.contracts import Contracts, load_contracts
from handrail.messages import ControlRecord, TaskSubmitted, utcnow
from handrail.schemas import PUBLIC_MODELS
from handrail.tools import default_registry
from handrail.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
#: What the AsyncAPI 3.0.0 specification allows where this document writes it.
COMPONENT_KEY = re.compile(r"^[\w\d.\-_]+$")
SECURITY_TYPES = {"userPassword", "apiKey", "X509", "symmetricEncryption", "asymmetricEncryption", "httpApiKey"} | {
    "http", "oauth2", "openIdConnect", "plain", "scramSha256", "scramSha512", "gssapi"
}  # fmt: skip
KAFKA_BINDING_FIELDS = {
    "channel": {"topic", "partitions", "replicas", "topicConfiguration", "bindingVersion"},
    "message": {"key", "schemaIdLocation", "schemaIdPayloadEncoding", "schemaLookupStrategy", "bindingVersion"},
}
TOPIC_CONFIGURATION = {"cleanup.policy", "retention.ms", "retention.bytes", "delete.retention.ms", "max.message.bytes"}
FIELDS = {
    "document": {"asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations", "components"},
    "channel": {"address", "messages", "title", "summary", "description", "servers", "parameters", "tags"}
    | {"externalDocs", "bindings"},
    "operation": {"action", "channel", "title", "summary", "description", "security", "tags", "externalDocs"}
    | {"bindings", "traits", "messages", "reply"},
    "message": {"headers", "payload", "correlationId", "contentType", "name", "title", "summary", "description"}
    | {"tags", "externalDocs", "bindings", "examples", "traits"},
    "server": {"host", "protocol", "protocolVersion", "pathname", "description", "title", "summary", "variables"}
    | {"security", "tags", "externalDocs", "bindings"},
}


@pytest.fixture(scope="module")
def contracts() -> Contracts:
    return load_contracts(ROOT / "config", default_registry().names())


@pytest.fixture(scope="module")
def doc(contracts: Contracts) -> dict[str, Any]:
    return document(contracts, Topics())


def test_the_checked_in_document_is_current(contracts: Contracts) -> None:
    assert not stale(contracts, ROOT / "schemas" / "asyncapi.json"), "run `make schemas` and commit the result"


def test_check_fails_on_a_stale_document(
    contracts: Contracts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "asyncapi.json"
    args = ["python -m handrail.asyncapi", "--config", str(ROOT / "config"), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*args, "--check"])
    with pytest.raises(SystemExit) as missing:
        main()
    assert missing.value.code == 1
    monkeypatch.setattr(sys, "argv", args)
    main()
    assert out.read_text() == render(contracts)
    monkeypatch.setattr(sys, "argv", [*args, "--check"])
    main()
    out.write_text(out.read_text().replace('"partitions": 1,', '"partitions": 3,', 1))
    with pytest.raises(SystemExit) as changed:
        main()
    assert changed.value.code == 1 and "stale" in capsys.readouterr().err


def test_the_document_has_the_shape_of_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0" and {"title", "version"} <= doc["info"].keys()
    assert doc.keys() <= FIELDS["document"]
    for server in doc["servers"].values():
        assert server.keys() <= FIELDS["server"] and {"host", "protocol"} <= server.keys()
        assert set(re.findall(r"{(\w+)}", server["host"])) == server["variables"].keys()
    for cid, channel in doc["channels"].items():
        assert channel.keys() <= FIELDS["channel"], cid
        assert set(re.findall(r"{(\w+)}", channel["address"])) == channel["parameters"].keys()
        assert channel["bindings"]["kafka"].keys() <= KAFKA_BINDING_FIELDS["channel"]
        assert channel["bindings"]["kafka"]["topicConfiguration"].keys() <= TOPIC_CONFIGURATION
    for oid, operation in doc["operations"].items():
        assert operation.keys() <= FIELDS["operation"] and operation["action"] in ("send", "receive"), oid
        channel = operation["channel"]["$ref"]
        assert all(m["$ref"].startswith(f"{channel}/messages/") for m in operation["messages"]), oid
    for kind, entries in doc["components"].items():
        assert all(COMPONENT_KEY.match(key) for key in entries), kind
    for name, message in doc["components"]["messages"].items():
        assert message.keys() <= FIELDS["message"], name
        assert message["bindings"]["kafka"].keys() <= KAFKA_BINDING_FIELDS["message"]
        jsonschema.Draft7Validator.check_schema(message["headers"])
    assert {s["type"] for s in doc["components"]["securitySchemes"].values()} <= SECURITY_TYPES
    for schema in doc["components"]["schemas"].values():
        # An AsyncAPI Schema is a superset of JSON Schema draft 07; these are in its common part.
        jsonschema.Draft7Validator.check_schema(schema)
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for token in ref[2:].split("/"):
            key = token.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and key in node, f"{ref} does not resolve"
            node = node[key]


def test_every_topic_has_its_channel_and_every_payload_its_schema(contracts: Contracts, doc: dict[str, Any]) -> None:
    topics = Topics("acme.")
    served = document(contracts, topics)
    assert served["components"]["parameters"]["prefix"]["default"] == "acme."
    addresses = {c["address"].replace("{prefix}", "acme."): c for c in served["channels"].values()}
    specs = topics.specs(contracts.agents)
    assert addresses.keys() == {s.name for s in specs}
    for spec in specs:
        kafka = addresses[spec.name]["bindings"]["kafka"]
        assert kafka["partitions"] == spec.partitions
        assert {
            k: str(v) if not isinstance(v, list) else ",".join(v) for k, v in kafka["topicConfiguration"].items()
        } == (spec.config)
    assert doc["channels"]["control"]["bindings"]["kafka"]["topicConfiguration"] == {"cleanup.policy": ["compact"]}
    payloads = {doc["components"]["messages"][name]["payload"]["$ref"].rsplit("/", 1)[1] for name in _messages(doc)}
    assert payloads <= {model.__name__ for model in PUBLIC_MODELS.values()}, "a payload without a file in schemas/"


def test_every_principals_reads_and_writes_are_its_operations(contracts: Contracts, doc: dict[str, Any]) -> None:
    topics = Topics()
    channel_of = {
        c["address"].replace("{prefix}", topics.prefix): f"#/channels/{cid}" for cid, c in doc["channels"].items()
    }
    found = {(o["tags"][0]["name"], o["action"], o["channel"]["$ref"]) for o in doc["operations"].values()}
    expected = set()
    for p in acl.principals(contracts, topics):
        reads = [*p.reads, *(t for t in channel_of if any(t.startswith(prefix) for prefix in p.read_prefixes))]
        expected |= {(p.name, "receive", channel_of[t]) for t in reads}
        expected |= {(p.name, "send", channel_of[t]) for t in p.writes}
    assert found == expected
    assert ("handrail-router", "send", "#/channels/agent.expense-intake") in found
    assert ("handrail-router", "send", "#/channels/agent.expense-approver") not in found


def test_a_payload_validates_against_its_message(doc: dict[str, Any]) -> None:
    task = TaskSubmitted(task_id="claim-1", workflow="expense-approval", input={"amount": 1})
    halt = ControlRecord(
        message_id="m", kind="halt", scope="task", name="claim-1", state="halted", reason="r", by="o", at=utcnow()
    )
    for cid, payload in (("tasks", task), ("control", halt)):
        message = doc["channels"][cid]["messages"][type(payload).__name__]["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["messages"][message]["payload"]
        validator = jsonschema.Draft202012Validator({**schema, "components": doc["components"]})
        validator.validate(json.loads(payload.to_bytes()))
        assert not validator.is_valid({**json.loads(payload.to_bytes()), "unknown": 1})
    key = doc["components"]["messages"]["TaskSubmitted"]["bindings"]["kafka"]["key"]
    jsonschema.validate("claim-1", key)


def _messages(doc: dict[str, Any]) -> set[str]:
    return {ref["$ref"].rsplit("/", 1)[1] for c in doc["channels"].values() for ref in c["messages"].values()}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)
