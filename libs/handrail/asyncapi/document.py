"""The AsyncAPI 3.0.0 document of a deployment: its topics, their messages, and who sends and receives each.

Channels come from ``Topics.specs`` (one per agent, from the contracts), their
payloads from ``carried`` and the models of ``handrail.schemas``, the
operations from the Kafka principals of ``handrail.bus.acl``: every topic a
principal may read is a ``receive``, every one it may write a ``send``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic.json_schema import models_json_schema

import handrail
from handrail.asyncapi.carried import AGENT, CHANNELS, Carried, channel_id
from handrail.asyncapi.messages import KAFKA_BINDING_VERSION, message
from handrail.bus import acl
from handrail.bus.security import MECHANISMS, PROTOCOLS
from handrail.contracts import Contracts
from handrail.schemas import PUBLIC_MODELS
from handrail.service.settings import KafkaSettings
from handrail.topics import Topics, TopicSpec

ASYNCAPI_VERSION = "3.0.0"
_SCHEMAS = "#/components/schemas/{model}"
#: How each security protocol Handrail speaks (``HANDRAIL_KAFKA_SECURITY_PROTOCOL``) is an AsyncAPI server.
_SERVERS = {
    "PLAINTEXT": ("plaintext", "kafka", "No authentication: a laptop, the tests."),
    "SASL_PLAINTEXT": ("sasl-plaintext", "kafka", "SASL on a private network: each service and agent its own user."),
    "SASL_SSL": ("sasl-ssl", "kafka-secure", "SASL over TLS: each service and agent its own user."),
}
#: Each SASL mechanism (``HANDRAIL_KAFKA_SASL_MECHANISM``) as an AsyncAPI security scheme type.
_SCHEMES = {"SCRAM-SHA-512": "scramSha512", "SCRAM-SHA-256": "scramSha256", "PLAIN": "plain"}
#: Topic settings the Kafka channel binding has a field for, and how its value is written there.
_TOPIC_CONFIG: dict[str, Callable[[str], Any]] = {
    "cleanup.policy": lambda v: v.split(","),
    "retention.ms": int,
    "retention.bytes": int,
    "delete.retention.ms": int,
    "max.message.bytes": int,
}


def document(contracts: Contracts, topics: Topics) -> dict[str, Any]:
    """The AsyncAPI document of a deployment with these contracts, its topics under ``topics.prefix``."""
    specs = topics.specs(contracts.agents)
    ids = {spec.name: spec.name.removeprefix(topics.prefix) for spec in specs}
    schemas, refs = _schemas()
    channels = {ids[spec.name]: _channel(spec, ids[spec.name], contracts) for spec in specs}
    carried = {c.model.__name__: c for ch in CHANNELS.values() for c in ch.carries}
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:handrail:asyncapi",
        "info": {
            "title": "Handrail",
            "version": handrail.__version__,
            "description": _DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": channels,
        "operations": dict(_operations(acl.principals(contracts, topics), ids, set(acl.state_topics(topics)))),
        "components": {
            "schemas": schemas,
            "messages": {name: message(c, refs[name]) for name, c in carried.items()},
            "parameters": {
                "prefix": {
                    "description": "The deployment's topic prefix, `HANDRAIL_TOPIC_PREFIX`.",
                    "default": topics.prefix,
                    "examples": [topics.prefix],
                }
            },
            "serverVariables": {
                "bootstrap": {
                    "description": "The Kafka bootstrap servers, `HANDRAIL_KAFKA_BOOTSTRAP`.",
                    "default": KafkaSettings.model_fields["kafka_bootstrap"].default,
                }
            },
            "securitySchemes": {
                _SCHEMES[m]: {
                    "type": _SCHEMES[m],
                    "description": f"`HANDRAIL_KAFKA_SASL_MECHANISM={m}`, as the principal the operation names "
                    "(`handrail acl`).",
                }
                for m in MECHANISMS
            },
        },
    }


_DESCRIPTION = """\
Handrail's topics, what each carries and which service sends and receives it.

Every topic name starts with the deployment's prefix (the channel parameter `prefix`, \
`HANDRAIL_TOPIC_PREFIX`, default `handrail.`); there is one `agent.<name>` topic per agent of \
`config/agents.yaml`. Payloads are compact JSON; their JSON Schemas are also in `schemas/` \
(one file per payload, generated from the same models). Field names are a stable contract: fields \
may be added, never renamed or repurposed. Operations name the Kafka principal (SASL user) \
that may send or receive: its ACLs allow exactly these (`handrail acl`)."""


def _servers() -> dict[str, Any]:
    """One server per security protocol, all at the bootstrap servers of the deployment."""
    servers: dict[str, Any] = {}
    for name in PROTOCOLS:
        server, protocol, why = _SERVERS[name]
        servers[server] = {
            "host": "{bootstrap}",
            "protocol": protocol,
            "title": name,
            "description": f"`HANDRAIL_KAFKA_SECURITY_PROTOCOL={name}`. {why}",
            "variables": {"bootstrap": {"$ref": "#/components/serverVariables/bootstrap"}},
        }
        if name != "PLAINTEXT":
            servers[server]["security"] = [{"$ref": f"#/components/securitySchemes/{_SCHEMES[m]}"} for m in MECHANISMS]
    return servers


def _schemas() -> tuple[dict[str, Any], dict[str, str]]:
    """Every public payload's JSON Schema, the models' shared parts hoisted beside them: (schemas, ref by
    model name)."""
    keys, found = models_json_schema(
        [(model, "serialization") for model in PUBLIC_MODELS.values()], ref_template=_SCHEMAS
    )
    refs = {model.__name__: keys[(model, "serialization")]["$ref"] for model in PUBLIC_MODELS.values()}
    return found["$defs"], refs


def _channel(spec: TopicSpec, cid: str, contracts: Contracts) -> dict[str, Any]:
    kind = CHANNELS[channel_id(cid)]
    about = {}
    if channel_id(cid) == AGENT:
        agent = cid.removeprefix("agent.")
        steps = [
            f"`{s.name}` of `{w.name}`" for w in contracts.workflows.values() for s in w.steps if agent in s.agents
        ]
        purpose = contracts.agents[agent].purpose.strip()
        about["description"] = f"Agent `{agent}`: {purpose} Its steps: {', '.join(steps) or 'none'}."
    config = {}
    for name, value in spec.config.items():
        if name not in _TOPIC_CONFIG:
            raise ValueError(f"topic {spec.name}: the Kafka channel binding has no field for {name!r}")
        config[name] = _TOPIC_CONFIG[name](value)
    return {
        "address": "{prefix}" + cid,
        "title": cid,
        "summary": kind.summary,
        **about,
        "messages": {c.model.__name__: {"$ref": f"#/components/messages/{c.model.__name__}"} for c in kind.carries},
        "parameters": {"prefix": {"$ref": "#/components/parameters/prefix"}},
        "bindings": {
            "kafka": {
                "partitions": spec.partitions,
                "topicConfiguration": config,
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _operations(
    principals: list[acl.Principal], ids: dict[str, str], state: set[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A ``receive`` for every topic a principal may read, a ``send`` for every one it may write."""
    for p in principals:
        reads = [*p.reads, *(t for t in ids if any(t.startswith(prefix) for prefix in p.read_prefixes))]
        for action, names in (("receive", reads), ("send", p.writes)):
            for topic in names:
                cid = ids[topic]
                how = f"As Kafka principal `User:{p.name}`"
                if action == "receive" and topic in state and p.group is not None:
                    how += ", from the start and outside any group: to rebuild Redis should it lose its state"
                yield (
                    f"{p.name.removeprefix('handrail-')}.{action}.{cid}",
                    {
                        "action": action,
                        "channel": {"$ref": f"#/channels/{_pointer(cid)}"},
                        "title": f"{p.runs}: {action} {cid}",
                        "description": how + ".",
                        "messages": [
                            {"$ref": f"#/channels/{_pointer(cid)}/messages/{c.model.__name__}"} for c in _carried(cid)
                        ],
                        "tags": [{"name": p.name}],
                    },
                )


def _carried(cid: str) -> tuple[Carried, ...]:
    return CHANNELS[channel_id(cid)].carries


def _pointer(token: str) -> str:
    """``token`` escaped for a JSON Pointer (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")
