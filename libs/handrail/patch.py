"""JSON Patch (RFC 6902) between a hop's parent context and its new context.

Every hop records the patch, so a task's lineage can be replayed from the
first context by applying the patches in order.
"""

from __future__ import annotations

from typing import Any

import jsonpatch

JsonPatch = list[dict[str, Any]]


def diff(parent: dict[str, Any], new: dict[str, Any]) -> JsonPatch:
    """Return the JSON Patch operations that turn ``parent`` into ``new``."""
    ops: JsonPatch = jsonpatch.make_patch(parent, new).patch
    return ops


def apply(context: dict[str, Any], ops: JsonPatch) -> dict[str, Any]:
    """Apply ``ops`` to a copy of ``context`` and return the result."""
    result: dict[str, Any] = jsonpatch.apply_patch(context, ops, in_place=False)
    return result
