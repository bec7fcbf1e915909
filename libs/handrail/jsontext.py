"""Fast JSON for the hot path: orjson, with the standard library for the little orjson refuses.

orjson is several times faster than ``json``, but it refuses to write integers beyond 64 bits and
to read ``NaN``, and it reads an integer beyond 64 bits as a float. Those go to ``json`` (text with
a run of 20 digits, which any such integer has, is read by ``json`` from the start), so every value
reads and writes as with ``json``. Canonical JSON for hashes and signatures is ``handrail.hashing``'s.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import orjson

#: 2**64 has 20 digits: a shorter run of digits is no integer orjson would read as a float.
_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def loads(data: bytes | str) -> Any:
    """Parse JSON as ``json.loads`` does; ``ValueError`` when it is not JSON."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw):
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    """Compact JSON: dataclasses as their fields, tuples as lists, keys as strings, anything else as
    its ``str``."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson.JSONEncodeError is one: an integer beyond 64 bits
        return json.dumps(value, separators=(",", ":"), default=_fallback).encode()


def _fallback(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)
