"""The one strict JSON reader (metasuite.jsontext): what json.loads lets through."""

from __future__ import annotations

import json

import pytest

from metasuite.jsontext import MAX_DEPTH, JsonTextError, loads


def test_plain_json_reads_as_json_does() -> None:
    text = '{"a": [1, 2.5, {"b": null}], "c": "[{ not brackets", "d": "\\"[[["}'
    assert loads(text) == json.loads(text)


@pytest.mark.parametrize(
    "text", ['{"a": 1, "a": 2}', '{"x": {"a": 1, "b": 2, "a": 1}}', '[{"k": 1, "k": 1}]']
)
def test_a_key_given_twice_in_one_object_is_refused(text: str) -> None:
    with pytest.raises(JsonTextError, match=r"key '[akx]' appears twice in one object"):
        loads(text)


def test_the_same_key_in_two_objects_is_fine() -> None:
    assert loads('[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]


def test_nesting_is_bounded_without_recursion() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(JsonTextError, match=rf"nested {MAX_DEPTH + 1} levels deep"):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(JsonTextError, match=r"nested 100,000 levels deep"):
        loads('{"a": ' * 100_000 + "1" + "}" * 100_000)
    # Brackets inside strings are not nesting.
    assert loads(json.dumps({"s": "[" * 1000})) == {"s": "[" * 1000}


def test_syntax_errors_keep_their_line_and_are_value_errors() -> None:
    with pytest.raises(ValueError, match=r"not valid JSON \(line 2: ") as info:
        loads('{"a": 1,\n}')
    assert info.value.lineno == 2
