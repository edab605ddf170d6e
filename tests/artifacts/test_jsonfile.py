"""The one JSON reader (`read_json`): every file the tool reads is bounded in size and nesting, holds only finite
numbers of sane size, no duplicate keys and no lone surrogates; each refusal is one line naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.artifacts.jsonfile import MAX_DEPTH, JSONFileError, parse_json, read_json, write_json

REFUSED = {
    "nested-200000": ("[" * 200_000 + "]" * 200_000, "nested 200000 levels deep, more than the 64"),
    "nested-65": ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested 65 levels deep"),
    "nan": ('{"max_length": NaN}', "holds NaN, which is not a JSON number"),
    "infinity": ('{"max_length": Infinity}', "holds Infinity"),
    "minus-infinity": ("[-Infinity]", "holds -Infinity"),
    "huge-float": ('{"max_length": 1e400}', "holds the number 1e400, too large for a float"),
    "huge-negative-float": ("[-1e400]", "holds the number -1e400"),
    "long-integer": ('{"opset": ' + "9" * 5000 + "}", "an integer of 5000 digits (at most 20)"),
    "duplicate-key": ('{"labels": ["a", "b"], "labels": "ab"}', "has the key 'labels' twice in one object"),
    "nested-duplicate-key": ('{"a": [{"x": 1, "x": 1}]}', "has the key 'x' twice"),
    "lone-surrogate": ('{"label": "\\ud800"}', "not half of a pair"),
    "invalid": ("{ not json", "not valid JSON"),
    "empty": ("", "not valid JSON"),
}


@pytest.mark.parametrize("text, message", REFUSED.values(), ids=REFUSED.keys())
def test_each_refusal_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "manifest.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(JSONFileError) as caught:
        read_json(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bytes_that_are_not_utf8_and_files_past_the_size_limit(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"label": "caf\xe9"}')
    with pytest.raises(JSONFileError, match=r"config.json: not UTF-8 text \(byte 14\)"):
        read_json(path)
    path.write_text(json.dumps({"x": "y" * 2000}))
    with pytest.raises(JSONFileError, match=r"config.json: more than 1,000 bytes"):
        read_json(path, max_bytes=1000)
    # A device or a FIFO is never read: one could be endless, the other would wait for a writer.
    with pytest.raises(JSONFileError, match=r"^/dev/zero: not a regular file$"):
        read_json(Path("/dev/zero"))
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(JSONFileError, match=r"fifo.json: not a regular file$"):
        read_json(tmp_path / "fifo.json")


def test_what_the_tool_writes_reads_back(tmp_path):
    data = {"labels": ["café", "東京", "😀", "[not {a bracket"], "deep": [[[[{"a": 1}]]]], "n": -(2**63),
            "f": 1.5e-300, "t": True, "none": None}
    write_json(tmp_path / "x.json", data)
    assert read_json(tmp_path / "x.json") == data
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH  # the limit itself is fine
    assert parse_json(nested) is not None
    assert parse_json('"\\ud83d\\ude00"') == "😀"  # a surrogate pair is a character, not a lone surrogate
    assert parse_json('["[[[[", "\\"{{{{"]') == ["[[[[", '"{{{{']  # brackets inside strings are not nesting


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list('[]{}",:\\0123456789.eE-+ aNIfinityu\ud800')), max_size=300))
def test_any_text_parses_or_is_one_json_file_error(text):
    try:
        parse_json(text)
    except JSONFileError as err:
        assert "\n" not in str(err)


@settings(max_examples=50, deadline=None)
@given(depth=st.integers(0, 5000), opener=st.sampled_from(["[", '{"k":']))
def test_any_nesting_parses_or_is_one_line(depth, opener):
    closer = "]" if opener == "[" else "}"
    text = opener * depth + "1" + closer * depth
    if depth <= MAX_DEPTH:
        assert parse_json(text) is not None
    else:
        with pytest.raises(JSONFileError, match=f"^nested {depth} levels deep"):
            parse_json(text)
