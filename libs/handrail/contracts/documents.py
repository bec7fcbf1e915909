"""Documents checked against the contracts' JSON Schemas (a task's input, a step's output, an edit).

Each schema is compiled once: a validator is built the first time a schema object is checked and
kept while the contracts hold that object. A problem names where in the document it is
(``output/amount: -3 is less than the minimum of 0``), so the message says what to fix.
"""

from __future__ import annotations

from typing import Any

import jsonschema

#: Compiled schemas kept; the contracts of a deployment have a few dozen.
_MAX_COMPILED = 4096
_compiled: dict[int, tuple[dict[str, Any], jsonschema.Draft202012Validator]] = {}


def validator_for(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """The compiled validator of ``schema`` (the same object gives the same validator)."""
    found = _compiled.get(id(schema))
    if found is None or found[0] is not schema:
        if len(_compiled) >= _MAX_COMPILED:
            _compiled.clear()
        found = (schema, jsonschema.Draft202012Validator(schema))
        _compiled[id(schema)] = found
    return found[1]


def problems(schema: dict[str, Any], document: Any, where: str) -> list[str]:
    """What in ``document`` breaks ``schema``, each under ``where`` (``output``, ``input``...), in a stable order."""
    errors = sorted(validator_for(schema).iter_errors(document), key=str)
    return [f"{'/'.join([where, *map(str, e.absolute_path)])}: {e.message}" for e in errors]


def summary(found: list[str], shown: int = 3) -> str:
    """The first ``shown`` problems, and how many more there are."""
    text = "; ".join(found[:shown])
    return text + (f"; and {len(found) - shown} more" if len(found) > shown else "")
