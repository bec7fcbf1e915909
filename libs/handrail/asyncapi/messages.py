"""AsyncAPI Message Objects: each payload model's schema reference, Kafka key and the headers Handrail sets."""

from __future__ import annotations

import inspect
from typing import Any, get_args

from opentelemetry import propagate

from handrail.asyncapi.carried import Carried
from handrail.bus.publisher import AUDIT_HEAD_HEADER, TYPE_HEADER
from handrail.lifecycle import Hop
from handrail.messages import Payload
from handrail.messages.tasks import TASK_ID_PATTERN
from handrail.signing import SIGNATURE_FIELD

#: The version of the Kafka bindings the document uses.
KAFKA_BINDING_VERSION = "0.5.0"


def message(carried: Carried, payload_ref: str) -> dict[str, Any]:
    """The Message Object of ``carried.model``, its payload at ``payload_ref`` (under components.schemas)."""
    model = carried.model
    # Docstrings quote names reStructuredText's way; the document's text is CommonMark.
    summary, _, details = (inspect.getdoc(model) or model.__name__).replace("``", "`").partition("\n\n")
    if SIGNATURE_FIELD in model.model_fields:
        details = (
            f"{details}\n\n" if details else ""
        ) + f"Signed when signing is on: `{SIGNATURE_FIELD}` is the sender's Ed25519 signature (`handrail.signing`)."
    key: dict[str, Any] = {"type": "string", "description": carried.key}
    if carried.keyed_by_task:
        key["pattern"] = TASK_ID_PATTERN
    found: dict[str, Any] = {
        "name": model.__name__,
        "title": model.__name__,
        "summary": " ".join(summary.split()),
        "contentType": "application/json",
        "headers": headers(model),
        "payload": {"$ref": payload_ref},
        "bindings": {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}},
    }
    if details:
        found["description"] = details.strip()
    if "task_id" in model.model_fields:
        found["correlationId"] = {
            "description": "The task the message belongs to.",
            "location": "$message.payload#/task_id",
        }
    return found


def headers(model: type[Payload]) -> dict[str, Any]:
    """The Kafka headers Handrail's publisher sets on ``model`` (values are UTF-8 strings); none is required,
    since a task's producer may publish without them."""
    properties: dict[str, Any] = {
        TYPE_HEADER: {
            "type": "string",
            "const": model.__name__,
            "description": "The payload model's name, so a consumer of a topic with several payloads tells them apart.",
        }
    }
    for name in sorted(propagate.get_global_textmap().fields):
        properties[name] = {
            "type": "string",
            "description": "W3C trace context of the span that published it, when there is one: one task, one trace.",
        }
    if model in get_args(Hop):
        properties[AUDIT_HEAD_HEADER] = {
            "type": "string",
            "description": "The task's audit chain head as the publisher left it, `<record hash>:<seq>`: the next "
            "writer's guess, never trusted (the append checks it).",
        }
    return {"type": "object", "properties": properties}
