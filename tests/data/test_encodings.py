"""The reader layer takes input as users give it: every line end (LF, CRLF, old-Mac CR) in every format, UTF-16 and
UTF-32 with a byte-order mark, binary or UTF-16-without-a-mark content named as not text row by row, texts a person
would see nothing of refused like empty ones, and FIFOs, /dev/stdin and process substitutions read once, as they
arrive, in the format their suffix, a declaration or their first line gives."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mtl.data.files import open_rows, read_examples, text_problem
from mtl.errors import DataError

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LINE_ENDS = ["\n", "\r\n", "\r"]
# Text a line can hold in every format: no line-end characters, no NUL; anything else, U+2028 and U+0085 included.
line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"), max_size=30)


def rows_of(path, **kwargs) -> list[tuple[str, int, str | None]]:
    return [(row.text, row.line, row.error) for row in open_rows(path, **kwargs)]


def write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


# --- line ends ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("end", LINE_ENDS, ids=["lf", "crlf", "cr"])
def test_every_line_end_ends_a_line_in_every_format(tmp_path, end):
    texts = ["one", "two\u2028still two\u0085", "three"]
    txt = write(tmp_path, "t.txt", end.join(texts).encode() + end.encode())
    jsonl = write(tmp_path, "t.jsonl", "".join(json.dumps({"text": t}) + end for t in texts).encode())
    csv_file = write(tmp_path, "t.csv", ("text" + end + end.join(texts) + end).encode())
    for path in (txt, jsonl, csv_file):
        assert [row[0] for row in rows_of(path)] == texts, path.name


def test_crlf_is_one_line_end_even_split_across_reads(tmp_path, monkeypatch):
    import mtl.data.sources as sources

    monkeypatch.setattr(sources, "CHUNK_BYTES", 3)  # "ab\r" | "\ncd" ...: every CR meets its LF in the next read
    path = write(tmp_path, "t.txt", b"ab\r\ncd\r\nef\r\n")
    assert rows_of(path) == [("ab", 1, None), ("cd", 2, None), ("ef", 3, None)]


def test_a_quoted_csv_field_keeps_its_own_line_ends(tmp_path):
    path = write(tmp_path, "q.csv", b'text\r"one\rtwo\r\nthree",\rnext\r')
    assert [row[0] for row in rows_of(path)] == ["one\rtwo\r\nthree", "next"]


@PROPERTY
@given(lines=st.lists(st.tuples(line_text, st.sampled_from(LINE_ENDS)), min_size=1, max_size=12),
       final=st.booleans())
def test_n_plain_text_lines_give_n_rows_whatever_the_line_ends(tmp_path, lines, final):
    """Line ends mixed as they come (a file edited on several systems); the last line with or without its end."""
    # An empty line ended by LF right after a CR end is a CRLF: no reader can tell them apart.
    assume(not any(end == "\r" and not text and next_end == "\n" for (_, end), (text, next_end) in
                   zip(lines, lines[1:])))
    texts = [text for text, _ in lines]
    content = "".join(text + end for text, end in lines[:-1]) + texts[-1] + (lines[-1][1] if final else "")
    path = write(tmp_path, "p.txt", content.encode("utf-8"))
    rows = rows_of(path)
    count = len(texts) - (0 if final or texts[-1] else 1)  # a last empty line without its end is no line
    assert [r[1] for r in rows] == list(range(1, count + 1))
    for text, (got, _, error) in zip(texts, rows):
        assert got == text and (error is None) == (text_problem(text) is None)


@PROPERTY
@given(texts=st.lists(line_text, min_size=1, max_size=12), end=st.sampled_from(LINE_ENDS))
def test_n_json_lines_give_n_rows_whatever_the_line_ends(tmp_path, texts, end):
    path = write(tmp_path, "p.jsonl", "".join(json.dumps({"text": t}, ensure_ascii=False) + end
                                              for t in texts).encode("utf-8"))
    rows = rows_of(path)
    assert len(rows) == len(texts)
    for text, (got, _, error) in zip(texts, rows):
        assert (error is None) == (text_problem(text) is None) and (error is not None or got == text)


@PROPERTY
@given(texts=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                              max_size=30), min_size=1, max_size=12),
       end=st.sampled_from(LINE_ENDS))
def test_n_csv_records_give_n_rows_whatever_the_line_ends(tmp_path, texts, end):
    buffer = io.StringIO()
    # QUOTE_ALL: with lineterminator="\r", QUOTE_MINIMAL would leave a field holding "\n" unquoted (two lines)
    csv.writer(buffer, lineterminator=end, quoting=csv.QUOTE_ALL).writerows([["text"], *([t] for t in texts)])
    rows = rows_of(write(tmp_path, "p.csv", buffer.getvalue().encode("utf-8")))
    assert len(rows) == len(texts)
    for text, (got, _, error) in zip(texts, rows):
        assert (error is None) == (text_problem(text) is None) and (error is not None or got == text)


# --- encodings ---------------------------------------------------------------------------------------------------

ENCODINGS = ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


def _with_bom(text: str, encoding: str) -> bytes:
    # "utf-16" and "utf-32" write their own mark; the -le/-be codecs write none, so the mark goes in as U+FEFF
    return text.encode(encoding) if encoding in ("utf-8-sig", "utf-16", "utf-32") else ("\ufeff" + text).encode(
        encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_byte_order_mark_names_the_encoding_in_every_format(tmp_path, encoding):
    texts = ["café", "東京 \U0001f600", "plain"]
    files = {
        "t.txt": "\r\n".join(texts) + "\r\n",
        "t.jsonl": "".join(json.dumps({"text": t, "label": "x"}, ensure_ascii=False) + "\n" for t in texts),
        "t.csv": "text,label\n" + "".join(f"{t},x\n" for t in texts),
    }
    for name, content in files.items():
        path = write(tmp_path, name, _with_bom(content, encoding))
        assert [row[0] for row in rows_of(path)] == texts, name
        if name != "t.txt":
            assert [(e.text, e.label) for e in read_examples(path)] == [(t, "x") for t in texts]


@PROPERTY
@given(texts=st.lists(line_text.filter(lambda t: text_problem(t) is None), min_size=1, max_size=8),
       encoding=st.sampled_from(ENCODINGS), end=st.sampled_from(LINE_ENDS))
def test_utf16_and_utf32_with_a_mark_round_trip(tmp_path, texts, encoding, end):
    path = write(tmp_path, "r.txt", _with_bom(end.join(texts) + end, encoding))
    assert rows_of(path) == [(text, i, None) for i, text in enumerate(texts, start=1)]


def test_utf16_without_a_mark_is_never_read_as_texts(tmp_path):
    path = write(tmp_path, "u.txt", "hello\nworld\n".encode("utf-16-le"))
    rows = rows_of(path)
    assert rows and all(error and "NUL" in error and "UTF-16" in error for _, _, error in rows)
    with pytest.raises(DataError, match=r"u.jsonl:1: holds NUL characters"):
        read_examples(write(tmp_path, "u.jsonl", '{"text": "a", "label": "x"}\n'.encode("utf-16-be")))
    with pytest.raises(DataError, match=r"u.csv:1: the header row: holds NUL characters"):
        read_examples(write(tmp_path, "u.csv", "text,label\na,x\n".encode("utf-16-le")))


@pytest.mark.parametrize("content", [b"\x00" * 64, b"\x00\x00\n\x00", b"text\x00with nul\n", os.urandom(0) + bytes(
    range(256)) * 4], ids=["nul-file", "nul-lines", "nul-inside", "binary"])
def test_binary_content_is_an_error_row_naming_its_line(tmp_path, content):
    rows = rows_of(write(tmp_path, "b.txt", content))
    assert rows and all(error for _, _, error in rows)
    assert all(isinstance(text, str) for text, _, _ in rows)
    json.dumps([text for text, _, _ in rows], ensure_ascii=False).encode("utf-8")  # writable as a record


def test_an_invalid_utf16_sequence_names_the_encoding(tmp_path):
    path = write(tmp_path, "bad.txt", codecs_bom16() + "ok\n".encode("utf-16-le") + b"\x00\xd8x\x00\n\x00")
    rows = rows_of(path)
    assert rows[0] == ("ok", 1, None)
    assert rows[1][1] == 2 and "not valid UTF-16-LE" in rows[1][2]


def test_a_truncated_last_utf16_character_is_named_not_dropped(tmp_path):
    path = write(tmp_path, "cut.txt", codecs_bom16() + "ok\nlast".encode("utf-16-le") + b"\x00")  # one byte short
    rows = rows_of(path)
    assert rows[0] == ("ok", 1, None)
    assert rows[1][1] == 2 and rows[1][2] == "not valid UTF-16-LE (byte 0x00); save the file as UTF-8"


def codecs_bom16() -> bytes:
    import codecs

    return codecs.BOM_UTF16_LE


# --- texts a person would see nothing of ---------------------------------------------------------------------

@pytest.mark.parametrize("text", ["\u200b", "\u200b\u200c\u200d\u2060\ufeff", "\x01\x02\x1b", " \u200b\t", "\u3164",
                                  "\u202e", "\u00a0\u2028"])
def test_a_text_of_invisible_characters_is_refused_like_an_empty_one(tmp_path, text):
    assert text_problem(text).startswith("empty text")
    rows = rows_of(write(tmp_path, "z.jsonl", (json.dumps({"text": text}) + "\n").encode()))
    assert rows[0][2] == f"field 'text': {text_problem(text)}"
    with pytest.raises(DataError, match=r"z.jsonl:1: field 'text': empty text"):
        read_examples(write(tmp_path, "z.jsonl", (json.dumps({"text": text, "label": "x"}) + "\n").encode()))


@pytest.mark.parametrize("text", ["a\u200b", "\x1b[31mred", "\u0301", "\U0001f468\u200d\U0001f469"])
def test_a_text_with_something_visible_is_kept_as_it_is(text):
    assert text_problem(text) is None


# --- sources: FIFOs, /dev/stdin, process substitution, suffix-less streams -------------------------------------

def _fifo(tmp_path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    os.mkfifo(path)

    def writer():
        with open(path, "wb") as handle:
            handle.write(content)

    threading.Thread(target=writer, daemon=True).start()
    return path


@pytest.mark.parametrize("name, content, fmt", [
    ("rows.jsonl", b'{"text": "a", "label": "x"}\r{"text": "b", "label": "y"}\r', None),
    ("rows.csv", b"text,label\na,x\nb,y\n", None),
    ("rows", b'\n{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n', None),  # no suffix: sniffed
    ("rows", b"text,label\na,x\nb,y\n", None),
    ("rows", b"text\tlabel\na\tx\nb\ty\n", None),
    ("rows.txt", b"text,label\na,x\nb,y\n", "csv"),  # a declared format wins over the suffix
])
def test_a_fifo_is_read_once_in_the_format_its_name_or_first_line_gives(tmp_path, name, content, fmt):
    path = _fifo(tmp_path, name, content)
    rows = list(open_rows(path, "text", "label", plain_text=False, fmt=fmt))
    assert [(r.text, r.label, r.error) for r in rows] == [("a", "x", None), ("b", "y", None)]


def test_a_suffix_less_plain_text_stream_is_plain_text(tmp_path):
    assert rows_of(_fifo(tmp_path, "log", b"first line\r{not json\n")) == [("first line", 1, None),
                                                                           ("{not json", 2, None)]


def test_a_file_with_another_suffix_is_plain_text_where_texts_are_read(tmp_path):
    path = write(tmp_path, "app.log", b'{"level": "info", "msg": "a JSON log line is a text here"}\n')
    assert rows_of(path) == [('{"level": "info", "msg": "a JSON log line is a text here"}', 1, None)]
    with pytest.raises(DataError, match=r"unknown file type '\.log'"):
        read_examples(path)


def test_a_declared_format_must_be_one_that_can_be_read(tmp_path):
    path = write(tmp_path, "a.jsonl", b'{"text": "a"}\n')
    with pytest.raises(DataError, match="cannot read it as 'xml'; valid formats here: txt, jsonl, csv, tsv"):
        open_rows(path, fmt="xml")
    with pytest.raises(DataError, match="cannot read it as 'txt'; valid formats here: jsonl, csv, tsv"):
        read_examples_as(path, "txt")


def read_examples_as(path, fmt):
    return list(open_rows(path, "text", "label", plain_text=False, fmt=fmt))


def test_a_folder_a_missing_file_and_an_unreadable_one_are_named(tmp_path):
    with pytest.raises(DataError, match="is a folder, not a file"):
        open_rows(tmp_path)
    with pytest.raises(DataError, match="file not found"):
        open_rows(tmp_path / "nope")
    if os.geteuid() != 0:  # root reads any file
        locked = write(tmp_path, "locked.txt", b"a\n")
        locked.chmod(0)
        with pytest.raises(DataError, match="permission denied"):
            open_rows(locked)


def test_a_line_without_an_end_past_the_limit_is_one_error_not_all_the_memory(tmp_path, monkeypatch):
    import mtl.data.sources as sources

    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 100)
    path = write(tmp_path, "zero.txt", b"ok\n" + b"\x00" * 5000)
    rows = open_rows(path)
    assert next(rows).text == "ok"
    with pytest.raises(DataError, match=r"zero.txt:2: no line end in the first"):
        next(rows)


SCRIPT = ("import sys; from mtl.data.files import read_examples; "
          "print(repr([(e.text, e.label) for e in read_examples(sys.argv[1])]))")


@pytest.mark.parametrize("shell", [
    "{python} -c '{script}' <(printf 'text,label\\ra,x\\rb,y\\r')",  # process substitution: /dev/fd/N, no suffix
    "printf '{{\"text\": \"a\", \"label\": \"x\"}}\\n{{\"text\": \"b\", \"label\": \"y\"}}' | "
    "{python} -c '{script}' /dev/stdin",
], ids=["process-substitution", "dev-stdin"])
def test_process_substitution_and_dev_stdin_are_read_like_files(shell):
    command = shell.format(python=sys.executable, script=SCRIPT)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr([("a", "x"), ("b", "y")])


def test_a_corpus_stream_that_never_ends_is_read_only_as_far_as_asked(tmp_path):
    from mtl.bench.workloads import load_corpus

    path = tmp_path / "endless"
    os.mkfifo(path)

    def writer():  # like `--corpus <(yes '{"text": "again"}')`: stops only when the reader goes
        try:
            with open(path, "wb") as handle:
                while True:
                    handle.write(b'{"text": "again"}\n' * 100)
        except BrokenPipeError:
            pass

    threading.Thread(target=writer, daemon=True).start()
    texts, source = load_corpus(path, limit=3)
    assert texts == ["again"] * 3 and source == str(path)
