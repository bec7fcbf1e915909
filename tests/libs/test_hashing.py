"""Context hashes: canonical JSON (RFC 8785) and sha256."""

from __future__ import annotations

import hashlib

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
