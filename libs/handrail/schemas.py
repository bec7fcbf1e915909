"""Export the public payloads' JSON Schemas into ``schemas/`` (and check they are current).

``python -m handrail.schemas`` writes them; ``--check`` exits 1 when a checked-in
schema differs from what the models produce.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from handrail.audit.record import AuditRecord
from handrail.autonomy.records import AutonomyChanged
from handrail.messages import (
    ControlRecord,
    DeadLetter,
    DecisionEvent,
    DecisionEvents,
    HandoffEnvelope,
    Payload,
    ReviewDecided,
    ReviewRequested,
    StepCompleted,
    TaskResult,
    TaskSubmitted,
)

#: Where the schemas live, relative to the repository root.
SCHEMA_DIR = Path("schemas")
#: Every payload on the bus that gets a JSON Schema in ``schemas/``, by schema file stem: what any
#: language reads or writes on a Handrail topic (``handrail.asyncapi`` says which topic carries which).
PUBLIC_MODELS: dict[str, type[Payload]] = {
    "task-submitted": TaskSubmitted,
    "task-result": TaskResult,
    "handoff-envelope": HandoffEnvelope,
    "step-completed": StepCompleted,
    "dead-letter": DeadLetter,
    "decision-event": DecisionEvent,
    "decision-events": DecisionEvents,
    "control-record": ControlRecord,
    "autonomy-changed": AutonomyChanged,
    "review-requested": ReviewRequested,
    "review-decided": ReviewDecided,
    "audit-record": AuditRecord,
}
_ID_BASE = "urn:handrail:schema:"


def render() -> dict[str, str]:
    """Every public payload's schema, as file name -> file text."""
    files: dict[str, str] = {}
    for stem, model in sorted(PUBLIC_MODELS.items()):
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{_ID_BASE}{stem}",
            **model.model_json_schema(mode="serialization"),
        }
        files[f"{stem}.schema.json"] = json.dumps(schema, indent=2, sort_keys=False) + "\n"
    return files


def stale(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    out = []
    for name, text in render().items():
        path = schema_dir / name
        if not path.exists() or path.read_text() != text:
            out.append(name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m handrail.schemas", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a checked-in schema is stale")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR)
    args = parser.parse_args()
    if args.check:
        if names := stale(args.dir):
            print(f"stale schemas in {args.dir}: {', '.join(names)}; run `make schemas`", file=sys.stderr)
            raise SystemExit(1)
        print("schemas are current")
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (args.dir / name).write_text(text)
        print(f"wrote {args.dir / name}")


if __name__ == "__main__":
    main()
