"""Fast JSON: what orjson refuses still parses and encodes, through the standard library."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from handrail import jsontext


@dataclass(frozen=True)
class Call:
    name: str
    arguments: tuple[int, ...]


def test_integers_beyond_64_bits_and_nan_parse_as_the_standard_library_parses_them() -> None:
    assert jsontext.loads(b'{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
    parsed = jsontext.loads('{"x": NaN}')["x"]
    assert parsed != parsed
    with pytest.raises(ValueError):
        jsontext.loads(b"{not json")


def test_dumps_writes_dataclasses_tuples_keys_and_the_rest_as_text_whatever_the_size_of_an_integer() -> None:
    value = {"call": Call("lookup", (1, 2)), 7: {1.5, "x"} and "set", "when": object}
    fast = json.loads(jsontext.dumps(value))
    assert fast["call"] == {"name": "lookup", "arguments": [1, 2]} and fast["7"] == "set"
    assert fast["when"] == str(object)
    big = {"call": Call("lookup", (2**70,)), "n": 2**70}
    assert json.loads(jsontext.dumps(big)) == {"call": {"name": "lookup", "arguments": [2**70]}, "n": 2**70}
    assert jsontext.dumps({"a": [1, "b"]}) == b'{"a":[1,"b"]}'
