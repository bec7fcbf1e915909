"""Context hashes: sha256 over the RFC 8785 (JCS) canonical JSON of a value.

Canonical JSON makes the hash independent of key order, whitespace and number
formatting, so a producer in any language computes the same digest.

Every hop hashes its context and every audit record hashes itself, so this is on
the hot path: values made of plain JSON types are encoded by orjson (C) - floats
in their RFC 8785 form, given as preformatted fragments, and keys sorted by code
point, which for keys without characters above U+FFFF is the UTF-16 order RFC 8785
asks for. Anything else (a key with such a character, a number with no RFC 8785
form, a subclass of a JSON type) goes to the reference implementation, ``rfc8785``,
whose output the fast path matches byte for byte (``tests/libs/test_hashing.py``).
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from typing import Any

import orjson
import rfc8785
from rfc8785._impl import _serialize_float

from handrail.errors import NotCanonical

#: The hash of "no parent": recorded before a task's first hop.
GENESIS = "0" * 64


_INT_MAX = 2**53 - 1
#: Between these, Python's shortest float repr is plain decimal (it uses exponents below 1e-4 and from
#: 1e16), as ECMAScript's is (below 1e-6, from 1e21): the digits are the same shortest round trip, so
#: only a trailing ".0" differs.
_PLAIN_FLOATS = (1e-4, 1e16)


class _Reference(Exception):
    """The value needs the reference implementation (or has no canonical form: it will say so)."""


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical JSON encoding of ``value``; ``NotCanonical`` when it has none."""
    try:
        return orjson.dumps(_prepared(value), option=orjson.OPT_SORT_KEYS)
    except (_Reference, orjson.JSONEncodeError):
        pass
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise NotCanonical(f"a number has no RFC 8785 encoding (NaN, infinity or |n| > 2^53): {exc}") from None


def _prepared(value: Any) -> Any:
    """``value`` with its floats as RFC 8785 fragments; ``_Reference`` when orjson cannot encode it canonically.

    A container with no float beneath it is checked and returned as it is, not copied: most of a
    context is strings and integers, and this walk is the part of hashing that runs in Python.
    """
    kind = type(value)
    if kind is dict:
        return _prepared_dict(value)
    if kind is list or kind is tuple:
        return _prepared_list(value)
    return _prepared_scalar(value, kind)


def _prepared_dict(value: dict[Any, Any]) -> dict[str, Any]:
    prepared: dict[str, Any] | None = None
    for key, item in value.items():
        if type(key) is not str or not (key.isascii() or max(key) <= "\uffff"):
            raise _Reference  # code point order is UTF-16 order only within the BMP
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is dict:
            done: Any = _prepared_dict(item)
        elif kind is list or kind is tuple:
            done = _prepared_list(item)
        else:
            done = _prepared_scalar(item, kind)
        if done is not item:
            if prepared is None:
                prepared = dict(value)
            prepared[key] = done
    return value if prepared is None else prepared


def _prepared_list(value: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    prepared: list[Any] | None = None
    for index, item in enumerate(value):
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is dict:
            done: Any = _prepared_dict(item)
        elif kind is list or kind is tuple:
            done = _prepared_list(item)
        else:
            done = _prepared_scalar(item, kind)
        if done is not item:
            if prepared is None:
                prepared = list(value)
            prepared[index] = done
    return value if prepared is None else prepared


def _prepared_scalar(value: Any, kind: type) -> Any:
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if -_INT_MAX <= value <= _INT_MAX:
            return value
        raise _Reference
    if kind is float:
        return orjson.Fragment(_float(value))
    raise _Reference


def _float(number: float) -> str:
    magnitude = abs(number)
    if _PLAIN_FLOATS[0] <= magnitude < _PLAIN_FLOATS[1]:
        text = repr(number)
        if "e" not in text:
            return text[:-2] if text.endswith(".0") else text
    if number != number or magnitude == float("inf"):
        raise _Reference  # no canonical form: the reference implementation raises
    sink = BytesIO()
    _serialize_float(number, sink)
    return sink.getvalue().decode()


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def context_hash(context: Any) -> str:
    """Return the hash carried as ``context_hash``: sha256 hex of the canonical JSON."""
    return sha256_hex(canonical_json(context))


def join_hash(parents: dict[str, str]) -> str:
    """The parent of a join of a parallel step's branches: sha256 of the RFC 8785 JSON of every branch's
    head, by branch name (``{"join": {branch: head}}``)."""
    return context_hash({"join": parents})
