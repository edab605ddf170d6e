"""Texts to classify, one row each, from arguments, a .txt/.jsonl/.csv file or stdin (no torch).

Unlike `mtl.data.files` (training data, where one bad line stops the run), a bad row here does not stop the others:
it becomes a row with an `error` (empty text, invalid JSON, missing field, bytes that are not UTF-8), so that
N rows in give N rows out.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mtl.data.files import CSV_SUFFIXES, JSONL_SUFFIXES
from mtl.errors import DataError

STDIN = "-"
# Bytes that are not UTF-8 survive decoding with errors="surrogateescape" as lone surrogates; a row with one is
# reported, not guessed at.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class InputRow:
    text: str  # printable (undecodable bytes shown as U+FFFD)
    error: str | None = None


def text_row(text: str) -> InputRow:
    if _UNDECODABLE.search(text):
        return InputRow(_printable(text), "not valid UTF-8")
    if not text.strip():
        return InputRow(text, "empty text")
    return InputRow(text)


def rows_from_arguments(texts: list[str]) -> list[InputRow]:
    # Python hands over undecodable argv bytes as lone surrogates, so the same check applies.
    return [text_row(t) for t in texts]


def iter_rows(file: Path, text_field: str = "text") -> Iterator[InputRow]:
    """Rows of a file (by suffix: JSONL, CSV/TSV, else one text per line) or of stdin (one text per line),
    read lazily: memory stays bounded however large the input is."""
    if str(file) == STDIN:
        return _lines(sys.stdin.buffer)
    if not file.is_file():
        raise DataError(f"{file}: file not found")
    suffix = file.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _jsonl(_binary_lines(file), text_field)
    if suffix in CSV_SUFFIXES:
        return _csv(file, text_field, "\t" if suffix == ".tsv" else ",")
    return _lines(_binary_lines(file))


def _binary_lines(file: Path) -> Iterator[bytes]:
    with file.open("rb") as handle:
        yield from handle


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff").rstrip("\r\n")


def _lines(lines: Iterable[bytes]) -> Iterator[InputRow]:
    for raw in lines:
        yield text_row(_decode(raw))


def _jsonl(lines: Iterable[bytes], text_field: str) -> Iterator[InputRow]:
    for number, raw in enumerate(lines, start=1):
        line = _decode(raw)
        if not line.strip():
            continue  # blank lines separate nothing in JSONL: they are not rows
        if _UNDECODABLE.search(line):
            yield InputRow(_printable(line), f"line {number}: not valid UTF-8")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield InputRow(line, f"line {number}: not valid JSON ({err.msg})")
            continue
        yield _field_row(record, text_field, f"line {number}")


def _csv(path: Path, text_field: str, delimiter: str) -> Iterator[InputRow]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if reader.fieldnames is not None and text_field not in reader.fieldnames:
            have = ", ".join(reader.fieldnames) or "none"
            raise DataError(f"{path}: no column {text_field!r} (columns: {_printable(have)}); use --text-field")
        for record in reader:
            yield _field_row(record, text_field, f"line {reader.line_num}")


def _field_row(record, text_field: str, where: str) -> InputRow:
    if not isinstance(record, dict):
        return InputRow(json.dumps(record), f"{where}: expected a JSON object, got {type(record).__name__}")
    text = record.get(text_field)
    if not isinstance(text, str):
        shown = "missing" if text is None else f"not a string ({type(text).__name__})"
        return InputRow("" if text is None else str(text), f"{where}: field {text_field!r} is {shown}")
    row = text_row(text)
    return InputRow(row.text, f"{where}: {row.error}") if row.error else row


def _printable(text: str) -> str:
    return _UNDECODABLE.sub("\ufffd", text)
