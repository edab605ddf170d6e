"""Hostile input to the one reader layer: every unusual-but-valid file is read as what it is, every bad row is an
error naming its line (strict) or an error record in its place (lenient), and nothing but the project's own errors
ever comes out, whatever the bytes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl.data.files import check_texts, label_set, open_rows, read_examples, text_problem
from mtl.errors import DataError, UserError

JSONL_OK = '{"text": "a", "label": "x"}\n'

# (file name, bytes, the (text, label) rows a lenient read gives, or an error fragment for a strict read)
VALID = [
    ("bom.jsonl", b"\xef\xbb\xbf" + JSONL_OK.encode(), [("a", "x")]),
    ("crlf.jsonl", b'{"text": "a", "label": "x"}\r\n{"text": "b", "label": "y"}\r\n', [("a", "x"), ("b", "y")]),
    ("ls.jsonl", '{"text": "one\u2028two\u0085three", "label": "x"}\n'.encode(), [("one\u2028two\u0085three", "x")]),
    ("escaped-ls.jsonl", b'{"text": "one\\u2028two", "label": "x"}\n', [("one\u2028two", "x")]),
    ("blank-lines.jsonl", b'\n\n{"text": "a", "label": "x"}\n\n', [("a", "x")]),
    ("no-final-newline.jsonl", b'{"text": "a", "label": "x"}', [("a", "x")]),
    ("int-label.jsonl", b'{"text": "a", "label": 3}\n', [("a", "3")]),
    ("emoji.jsonl", '{"text": "\U0001f600 \u4e2d\u6587", "label": "x"}\n'.encode(), [("\U0001f600 \u4e2d\u6587", "x")]),
    ("escaped-pair.jsonl", b'{"text": "\\ud83d\\ude00", "label": "x"}\n', [("\U0001f600", "x")]),
    ("huge.jsonl", json.dumps({"text": "w " * 200_000, "label": "x"}).encode() + b"\n", [("w " * 200_000, "x")]),
    ("extra-fields.jsonl", b'{"text": "a", "label": "x", "meta": {"deep": [1, 2, {"k": null}]}}\n', [("a", "x")]),
    ("quoted.csv", b'text,label\n"a, ""quoted"" text",x\n', [('a, "quoted" text', "x")]),
    ("multiline.csv", b'text,label\n"line one\nline two",x\n', [("line one\nline two", "x")]),
    ("crlf.csv", b"text,label\r\na,x\r\nb,y\r\n", [("a", "x"), ("b", "y")]),
    ("bom.csv", b"\xef\xbb\xbftext,label\na,x\n", [("a", "x")]),
    ("huge-field.csv", b'text,label\n"' + b"x" * 200_000 + b'",y\n', [("x" * 200_000, "y")]),
    ("tabs.tsv", b"text\tlabel\na, b\tx\n", [("a, b", "x")]),
    ("reordered.csv", b"label,text\nx,a\n", [("a", "x")]),
]

# (file name, bytes, the line and error fragment of the first bad row)
BAD_ROWS = [
    ("surrogate.jsonl", JSONL_OK.encode() + b'{"text": "a\\ud800b", "label": "x"}\n', 2, "lone surrogate (U+D800)"),
    ("surrogate-label.jsonl", b'{"text": "a", "label": "\\udfff"}\n', 1, "label"),
    ("not-json.jsonl", JSONL_OK.encode() + b"{oops}\n", 2, "not valid JSON"),
    ("nested.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", 1, "nested too deeply"),
    ("list.jsonl", b"[1, 2]\n", 1, "expected a JSON object, got list"),
    ("null.jsonl", b"null\n", 1, "expected a JSON object, got NoneType"),
    ("no-text.jsonl", b'{"body": "a", "label": "x"}\n', 1, "missing field 'text'"),
    ("no-label.jsonl", b'{"text": "a"}\n', 1, "missing field 'label'"),
    ("number-text.jsonl", b'{"text": 5, "label": "x"}\n', 1, "must be a string, got int"),
    ("empty-text.jsonl", b'{"text": "  \\t ", "label": "x"}\n', 1, "empty text"),
    ("bool-label.jsonl", b'{"text": "a", "label": true}\n', 1, "label must be a string or integer"),
    ("list-label.jsonl", b'{"text": "a", "label": ["x"]}\n', 1, "label must be a string or integer"),
    ("empty-label.jsonl", b'{"text": "a", "label": " "}\n', 1, "empty label"),
    ("latin1.jsonl", JSONL_OK.encode() + b'{"text": "caf\xe9", "label": "x"}\n', 2, "not valid UTF-8 (byte 0xe9)"),
    ("unclosed.csv", b'text,label\nok,x\n"never closed,x\nmore,y\n', 3, "a quote opens on this line and never closes"),
    ("stray-quote.csv", b'text,label\n"a"b,x\n', 2, "not valid CSV"),
    ("latin1.csv", b"text,label\ncaf\xe9,x\n", 2, "not valid UTF-8"),
    ("short-row.csv", b"text,label\nonly text\n", 2, "missing field 'label'"),
    ("empty-csv-text.csv", b'text,label\n"",x\n', 2, "empty text"),
]

# (file name, bytes, the error fragment of a problem with the file as a whole)
BAD_FILES = [
    ("empty.jsonl", b"", "no examples (the file is empty)"),
    ("only-blank.jsonl", b"\n\n  \n", "no examples"),
    ("header-only.csv", b"text,label\n", "no examples"),
    ("no-column.csv", b"body,label\na,x\n", "no column 'text' (columns: body, label)"),
    ("data.parquet", b"PAR1", "unknown file type '.parquet'"),
    ("data.txt", b"a\n", "unknown file type '.txt'"),  # plain text holds no labels: strict readers refuse it
    ("noext", b"a\n", "no column 'text' (columns: a)"),  # no suffix, first line not '{': read as CSV
]


def write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name, content, rows", VALID, ids=[case[0] for case in VALID])
def test_unusual_but_valid_files_are_read_as_what_they_are(tmp_path, name, content, rows):
    path = write(tmp_path, name, content)
    assert [(e.text, e.label) for e in read_examples(path)] == rows


@pytest.mark.parametrize("name, content, line, fragment", BAD_ROWS, ids=[case[0] for case in BAD_ROWS])
def test_a_bad_row_stops_a_strict_read_naming_file_and_line(tmp_path, name, content, line, fragment):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as caught:
        read_examples(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: ") and fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize("name, content, line, fragment", BAD_ROWS, ids=[case[0] for case in BAD_ROWS])
def test_a_bad_row_is_an_error_record_in_its_place_when_lenient(tmp_path, name, content, line, fragment):
    path = write(tmp_path, name, content)
    rows = list(open_rows(path, "text", "label"))
    bad = [row for row in rows if row.error]
    assert bad and bad[0].line == line and fragment in bad[0].error
    assert all(row.error is None for row in rows if row.line < line)
    json.dumps([row.text for row in rows], ensure_ascii=False).encode("utf-8")  # printable, writable as UTF-8


@pytest.mark.parametrize("name, content, fragment", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_a_bad_file_is_one_error_before_any_row(tmp_path, name, content, fragment):
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        read_examples(write(tmp_path, name, content))


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_examples(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="not a file"):
        read_examples(tmp_path)


def test_plain_text_lines_break_at_line_ends_not_at_unicode_separators(tmp_path):
    path = write(tmp_path, "t.txt", "one\u2028still one\u0085too\r\n\ntwo\n".encode())
    rows = list(open_rows(path))
    assert [(r.text, r.line, r.error) for r in rows] == [
        ("one\u2028still one\u0085too", 1, None), ("", 2, "empty text"), ("two", 3, None)]


def test_an_unclosed_quote_ends_the_lenient_read_after_the_rows_before_it(tmp_path):
    path = write(tmp_path, "q.csv", b'text\nok one\n"unclosed two\nthree\nfour\nfive\n')
    rows = list(open_rows(path))
    assert [(r.text, r.error is None) for r in rows] == [("ok one", True), ("", False)]
    assert rows[1].line == 3 and "never closes" in rows[1].error


def test_labels_differing_only_by_case_or_space_are_named_in_a_warning(tmp_path, caplog):
    path = write(tmp_path, "l.jsonl", b'{"text": "a", "label": "World"}\n{"text": "b", "label": "world "}\n'
                                      b'{"text": "c", "label": "Sports"}\n')
    with caplog.at_level(logging.WARNING, logger="mtl"):
        labels = label_set(e.label for e in read_examples(path))
    assert labels == ("Sports", "World", "world ")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'World'" in warnings[0] and "'world '" in warnings[0]
    assert "Sports" not in warnings[0]


@pytest.mark.parametrize("texts, fragment", [
    ("one string", "not a single string"),
    (b"bytes", "not a single string"),
    (["ok", ""], "text 1: empty text"),
    (["ok", None], "text 1: expected a string, got NoneType"),
    (["a\ud800"], "text 0: holds a lone surrogate"),
    ([3], "text 0: expected a string, got int"),
])
def test_api_texts_are_checked_naming_the_row(texts, fragment):
    with pytest.raises(DataError, match=fragment):
        check_texts(texts)


def test_api_texts_accept_any_iterable_of_good_strings():
    assert check_texts(t for t in ("a", "\U0001f600", "x\u2028y")) == ["a", "\U0001f600", "x\u2028y"]


# --- properties: arbitrary bytes, text and JSON ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv", ".tsv", ".txt"]))
def test_any_bytes_give_rows_or_the_projects_own_error(tmp_path, content, suffix):
    path = write(tmp_path, f"any{suffix}", content)
    try:
        rows = list(open_rows(path, "text", None))
    except UserError:
        return
    for row in rows:
        assert isinstance(row.text, str) and row.line >= 1
        if row.error is None:
            assert text_problem(row.text) is None
        row.text.encode("utf-8")  # never a lone surrogate: every row can be written out
    if suffix == ".txt":
        return  # plain text is for predict only; strict readers refuse it by its suffix
    try:
        examples = read_examples(path, "text", None)
    except UserError:
        assert any(row.error for row in rows) or not rows
        return
    assert [e.text for e in examples] == [row.text for row in rows]


@PROPERTY
@given(texts=st.lists(st.text(), min_size=1, max_size=20))
def test_every_jsonl_line_becomes_one_row_in_order(tmp_path, texts):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    rows = list(open_rows(path, "text"))
    assert [row.line for row in rows] == list(range(1, len(texts) + 1))
    for text, row in zip(texts, rows):
        assert (row.error is None) == (text_problem(text) is None)
        if row.error is None:
            assert row.text == text


@PROPERTY
@given(texts=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                              min_size=1), min_size=1, max_size=20))
def test_csv_written_by_the_csv_module_reads_back_exactly(tmp_path, texts):
    import csv

    path = tmp_path / "rows.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    rows = list(open_rows(path))
    assert len(rows) == len(texts)
    for text, row in zip(texts, rows):
        assert row.text == text if row.error is None else text_problem(text) is not None


@PROPERTY
@given(record=json_values)
def test_any_json_value_is_a_row_or_a_row_error(tmp_path, record):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    rows = list(open_rows(path, "text", "label"))
    assert len(rows) == 1
    row = rows[0]
    good = (isinstance(record, dict) and isinstance(record.get("text"), str) and text_problem(record["text"]) is None
            and isinstance(record.get("label"), (str, int)) and not isinstance(record.get("label"), bool)
            and text_problem(str(record["label"])) is None)
    assert (row.error is None) == good
