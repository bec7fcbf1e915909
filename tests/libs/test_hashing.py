"""Context hashes: canonical JSON (RFC 8785) and sha256."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
import rfc8785

from handrail.errors import NotCanonical
from handrail.hashing import GENESIS, canonical_json, context_hash


def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, 2, {"d": None, "c": True}]}) == b'{"a":[1,2,{"c":true,"d":null}],"b":1}'


def test_canonical_json_formats_numbers_as_rfc8785() -> None:
    # RFC 8785 serialises numbers as ECMAScript does: no trailing ".0", exponent form for large ones.
    assert canonical_json({"x": 1.0, "y": 1e21, "z": 0.000001}) == b'{"x":1,"y":1e+21,"z":0.000001}'


def test_canonical_json_escapes_only_what_it_must() -> None:
    assert canonical_json({"s": "é\n\u2028"}) == '{"s":"é\\n\u2028"}'.encode()


def test_context_hash_is_sha256_of_canonical_json() -> None:
    context = {"input": {"amount": 12.5}, "steps": {}}
    expected = hashlib.sha256(b'{"input":{"amount":12.5},"steps":{}}').hexdigest()
    assert context_hash(context) == expected


def test_context_hash_ignores_key_order_but_not_values() -> None:
    assert context_hash({"a": 1, "b": 2}) == context_hash({"b": 2, "a": 1})
    assert context_hash({"a": 1, "b": 2}) != context_hash({"a": 1, "b": 3})
    assert context_hash({"a": 1, "b": 2}) != context_hash({"a": 1})


def test_genesis_is_not_a_possible_digest_of_common_input() -> None:
    assert len(GENESIS) == 64
    assert context_hash({}) != GENESIS


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, 1, -1, 2**53 - 1, -(2**53) + 1, rng.randrange(-(10**12), 10**12)])
    if kind == 2:  # floats across every magnitude, where the number formats differ
        return rng.choice([-1.0, 1.0]) * rng.random() * 10.0 ** rng.randrange(-30, 30)
    if kind == 3:
        edges = [0.0, -0.0, 1.0, 1e21, 1e-7, 5e-05, 0.0001, 1e16, 9999999999999998.0, 123456789012345680000.0]
        return rng.choice(edges)
    if kind in (4, 5):
        return "".join(chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0xD800), 0x2028, 0x1F600]))
                       for _ in range(rng.randrange(6)))  # fmt: skip
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["a", "B", "é", "\u20ac", "\ufb01", "\U0001f600", "", "a\U0001f600", "10", "2"]
    return {rng.choice(keys) + str(rng.randrange(3)): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_the_fast_encoding_is_the_reference_implementation_byte_for_byte() -> None:
    rng = random.Random(8785)
    for _ in range(20_000):
        value = _random_value(rng)
        assert canonical_json(value) == rfc8785.dumps(value), value


def test_values_without_a_canonical_form_are_refused_as_the_reference_refuses_them() -> None:
    for value in (float("nan"), {"x": float("inf")}, [2**53], {"y": -(2**60)}):
        with pytest.raises(NotCanonical):
            canonical_json(value)
    # What orjson would encode differently goes to the reference implementation: the same bytes.
    assert canonical_json({"\U0001f600": 1, "\ufb01": 2}) == rfc8785.dumps({"\U0001f600": 1, "\ufb01": 2})
    assert canonical_json(("a", 1.5)) == b'["a",1.5]'
