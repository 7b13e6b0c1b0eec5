"""A key given twice is refused with its JSON pointer (RFC 6901), wherever it is."""

from __future__ import annotations

import json

import pytest

from litgpt_min import json_keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"finished": true, "finished": false}', "duplicate key 'finished' at /finished"),
        (
            '{"rows": [{"id": "r"}, {"id": "s", "v": 1, "v": 2}]}',
            "duplicate key 'v' at /rows/1/v (the object with id 's')",
        ),
        ('[[{"a/b": {"~k": 1, "~k": 2}}]]', "duplicate key '~k' at /0/0/a~1b/~0k"),
        # An outer object's repeat is met before its members'.
        ('{"a": {"b": 1, "b": 2}, "c": 1, "c": 2}', "duplicate key 'c' at /c"),
    ],
)
def test_a_key_given_twice_is_named_with_its_pointer(text: str, message: str) -> None:
    with pytest.raises(json_keys.DuplicateKey) as refused:
        json_keys.loads(text)
    assert str(refused.value) == message


def test_a_document_without_repeats_reads_as_json_reads_it() -> None:
    text = '{"a": [1, {"b": 2.5, "id": "x"}], "c": null}'
    value = json_keys.loads(text)
    assert value == {"a": [1, {"b": 2.5, "id": "x"}], "c": None}
    assert all(type(obj) is dict for obj in (value, value["a"][1]))


def test_a_byte_order_mark_is_told_to_be_left_out() -> None:
    """Before: "Unexpected UTF-8 BOM (decode using utf-8-sig)", advice to a programmer, not to the
    author of the file (a profile, a results file, a config saved by a Windows editor)."""
    with pytest.raises(json.JSONDecodeError) as refused:
        json_keys.loads('\ufeff{"a": 1}')
    assert refused.value.msg == "the file starts with a byte order mark (BOM): save it as UTF-8 without one"
    assert (refused.value.lineno, refused.value.colno) == (1, 1)


LONG = "x" * 100_000  # a key or an id of 100,000 characters


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # Before: the key whole, twice (in its quote and its pointer), a line of 200,028 characters.
        (f'{{"rows": [{{"{LONG}": 1, "{LONG}": 2}}]}}', r"^duplicate key 'x{56}\.\.\. at /rows/0/x{57}\.\.\.$"),
        (
            f'{{"rows": [{{"id": "{LONG}", "a": {{"b": 1, "b": 2}}}}]}}',
            r"^duplicate key 'b' at /rows/0/a/b \(in the object with id 'x{56}\.\.\.\)$",
        ),
    ],
    ids=["key", "id"],
)
def test_a_huge_key_or_id_is_quoted_cut_short(document: str, message: str) -> None:
    """The README's "a value the line quotes is cut short past 60 characters", for every reader of
    a user's JSON file (a config.json, an index, a --data-file, a results file)."""
    with pytest.raises(json_keys.DuplicateKey, match=message):
        json_keys.loads(document)
