"""Reading texts and labelled rows from files: JSON Lines, CSV/TSV, plain text (one text a line) and stdin. No torch.

One reader for every command. `open_rows` yields each row in file order, lazily (memory stays bounded whatever the
file size), as a `Row`: its text, its label when asked for, the line it starts on, and an error when it cannot be
used. Strict callers (training, evaluation, export validation, the bench corpus) use `read_examples`, which stops at
the first bad row with one `DataError` naming file and line; lenient callers (predict) keep a bad row in its place
as an error record, so N rows in give N rows out.

Valid but unusual input is read as what it is: any Unicode a JSON string can hold (a lone surrogate such as
`\\ud800`, which no tokenizer accepts, is that row's error), U+2028 / U+0085 inside a text (text, not line breaks:
lines end at `\\n` only), a byte-order mark, CRLF line ends, fields of any size, CSV quoting (a quote that never
closes is an error naming the line where it opened).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mtl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
STDIN = "-"
_SURROGATE = re.compile("[\ud800-\udfff]")
DEMO_TASKS = {"topic": "ag_news", "sentiment": "tweet_eval_sentiment"}
# Python's csv refuses fields over 131,072 characters by default; a long document in a CSV is still one text.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Row:
    """One row as read: `text` is printable even for a bad row (undecodable bytes shown as U+FFFD)."""

    text: str
    line: int  # 1-based line of the file where the row starts (0: a command-line argument)
    label: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Example:
    """A usable row: a non-empty text and, for labelled data, a non-empty label."""

    text: str
    label: str | None
    line: int  # 1-based line in its file, for error messages


def text_problem(text: Any) -> str | None:
    """Why `text` cannot be classified, or None: it must be a non-empty string of valid Unicode."""
    if not isinstance(text, str):
        return f"expected a string, got {type(text).__name__}"
    if not text.strip():
        return "empty text"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"holds a lone surrogate (U+{ord(text[err.start]):04X}), which is not valid Unicode text"
    return None


def check_texts(texts: Any) -> list[str]:
    """The texts as a list, or one `DataError` naming the first bad one by its index (API callers' inputs)."""
    if isinstance(texts, (str, bytes)):
        raise DataError("texts must be a list of strings, not a single string; pass [text]")
    texts = list(texts)
    for index, text in enumerate(texts):
        problem = text_problem(text)
        if problem:
            raise DataError(f"text {index}: {problem}")
    return texts


def rows_from_arguments(texts: list[str]) -> list[Row]:
    """Texts given on the command line (Python hands over undecodable argv bytes as lone surrogates)."""
    return [_text_row(text, 0) for text in texts]


def open_rows(source: Path | str, text_field: str = "text", label_field: str | None = None,
              plain_text: bool = True) -> Iterator[Row]:
    """Rows of a file, chosen by suffix (JSON Lines, CSV/TSV, else one text a line when `plain_text`), or of
    stdin (`-`, one text a line). Problems with the file as a whole (missing, unknown type, no such CSV column)
    raise `DataError` here, before the first row is read; problems with a row come back as that row's error."""
    if str(source) == STDIN:
        return _text_lines(sys.stdin.buffer)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _jsonl(_binary_lines(path), text_field, label_field)
    if suffix in CSV_SUFFIXES:
        return _csv(path, text_field, label_field, "\t" if suffix == ".tsv" else ",")
    if plain_text and label_field is None:
        return _text_lines(_binary_lines(path))
    valid = ", ".join(JSONL_SUFFIXES + CSV_SUFFIXES)
    raise DataError(f"{path}: unknown file type {suffix or '(none)'!r}; valid: {valid}")


def read_examples(path: Path, text_field: str = "text", label_field: str | None = "label") -> list[Example]:
    """Every row of a JSON Lines or CSV/TSV file, stopping at the first bad one with its file and line.
    `label_field=None` reads unlabelled text."""
    path = Path(path)
    examples = []
    for row in open_rows(path, text_field, label_field, plain_text=False):
        if row.error:
            raise DataError(f"{path}:{row.line}: {row.error}")
        examples.append(Example(row.text, row.label, row.line))
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty)")
    return examples


def _binary_lines(path: Path) -> Iterator[bytes]:
    # Binary lines end at b"\n" only, so U+2028 and U+0085 stay inside their text.
    with path.open("rb") as handle:
        yield from handle


def _decode(raw: bytes, first: bool) -> tuple[str, str | None]:
    """(text, None) for one line's bytes, or (the text with bad bytes shown as U+FFFD, the error). A BOM on the
    first line and the CR/LF line end are dropped."""
    if first:
        raw = raw.removeprefix(b"\xef\xbb\xbf")
    raw = raw.rstrip(b"\r\n")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        bad = raw[err.start:err.start + 1].hex()
        return raw.decode("utf-8", errors="replace"), f"not valid UTF-8 (byte 0x{bad}); save the file as UTF-8"


def _text_lines(lines: Iterable[bytes]) -> Iterator[Row]:
    for number, raw in enumerate(lines, start=1):
        text, error = _decode(raw, number == 1)
        yield Row(text, number, error=error) if error else _text_row(text, number)


def _text_row(text: str, line: int) -> Row:
    problem = text_problem(text)
    return Row(_printable(text), line, error=problem) if problem else Row(text, line)


def _jsonl(lines: Iterable[bytes], text_field: str, label_field: str | None) -> Iterator[Row]:
    for number, raw in enumerate(lines, start=1):
        line, error = _decode(raw, number == 1)
        if error:
            yield Row(line, number, error=error)
            continue
        if not line.strip():
            continue  # blank lines separate nothing in JSON Lines: they are not rows
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield Row(_printable(line), number, error=f"not valid JSON ({err.msg} at column {err.colno})")
            continue
        except RecursionError:
            yield Row(_printable(line), number, error="JSON nested too deeply to read")
            continue
        if not isinstance(record, dict):
            yield Row(_printable(line), number, error=f"expected a JSON object, got {type(record).__name__}")
            continue
        yield _record_row(record, number, text_field, label_field)


def _csv(path: Path, text_field: str, label_field: str | None, delimiter: str) -> Iterator[Row]:
    handle = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.DictReader(handle, delimiter=delimiter, strict=True)
    try:
        columns = reader.fieldnames or []
    except csv.Error as err:
        handle.close()
        raise DataError(f"{path}:1: the header row is not valid CSV ({err})") from None
    for name in (text_field, label_field):
        if name is not None and name not in columns:
            handle.close()
            have = _printable(", ".join(columns)) or "none"
            raise DataError(f"{path}: no column {name!r} (columns: {have}); choose one with --text-field/--label-field")
    return _csv_rows(handle, reader, text_field, label_field)


def _csv_rows(handle, reader: csv.DictReader, text_field: str, label_field: str | None) -> Iterator[Row]:
    with handle:
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                if "unexpected end of data" in str(err):
                    # Everything after an unclosed quote is inside it: no later row can be told apart, so this
                    # is the last row read.
                    yield Row("", start, error="a quote opens on this line and never closes (the rest of the file "
                                               "is inside it)")
                    return
                yield Row("", start, error=f"not valid CSV ({err})")
                continue
            yield _record_row(record, start, text_field, label_field)


def _record_row(record: dict, line: int, text_field: str, label_field: str | None) -> Row:
    text = record.get(text_field)
    if text is None:
        have = ", ".join(str(k) for k in record if k is not None) or "none"
        return Row("", line, error=f"missing field {text_field!r} (fields present: {_printable(have)})")
    problem = text_problem(text) if isinstance(text, str) else f"must be a string, got {type(text).__name__}"
    shown = _printable(text) if isinstance(text, str) else ""
    if problem:
        undecodable = isinstance(text, str) and any("\udc80" <= c <= "\udcff" for c in text)
        return Row(shown, line, error="not valid UTF-8; save the file as UTF-8" if undecodable
                   else f"field {text_field!r}: {problem}")
    if label_field is None:
        return Row(text, line)
    label = record.get(label_field)
    if label is None:
        return Row(text, line, error=f"missing field {label_field!r}")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        return Row(text, line, error=f"label must be a string or integer, got {json.dumps(label)[:80]}")
    label = str(label)
    problem = "empty label" if not label.strip() else text_problem(label)
    if problem:
        return Row(text, line, error=f"label {_printable(label)!r}: {problem}")
    return Row(text, line, label=label)


def _printable(text: str) -> str:
    """The text with anything that cannot be written as UTF-8 (lone surrogates) shown as U+FFFD."""
    return _SURROGATE.sub("\ufffd", text) if not text.isascii() else text


def label_set(examples: list[Example]) -> tuple[str, ...]:
    """The task's labels, sorted, from its training examples. Labels that differ only by case or surrounding
    whitespace are kept apart (they may be meant so) but named in a warning, as they are usually a typo."""
    labels = tuple(sorted({e.label for e in examples if e.label is not None}))
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label.strip().casefold(), []).append(label)
    for similar in groups.values():
        if len(similar) > 1:
            log.warning("labels %s differ only by case or surrounding whitespace; they are kept as different "
                        "classes", ", ".join(repr(label) for label in similar))
    return labels


def check_labels(path: Path, examples: list[Example], labels: tuple[str, ...]) -> None:
    """Every example's label must be one the model knows."""
    known = set(labels)
    for example in examples:
        if example.label not in known:
            raise DataError(
                f"{path}:{example.line}: label {example.label!r} is not one of the training labels "
                f"({', '.join(labels)})"
            )


@dataclass(frozen=True)
class TaskFiles:
    """Where one task's data lives: `name=TRAIN[,VALIDATION]` on the command line."""

    name: str
    train: Path
    validation: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> TaskFiles:
        form = "NAME=TRAIN_FILE[,VALIDATION_FILE]"
        name, paths = split_named(spec, "--task", form)
        parts = [p for p in paths.split(",") if p]
        if not 1 <= len(parts) <= 2:
            raise ConfigError(f"bad --task {spec!r}: expected {form}")
        return cls(name, Path(parts[0]), Path(parts[1]) if len(parts) == 2 else None)


def split_named(spec: str, flag: str, form: str = "NAME=FILE") -> tuple[str, str]:
    """`NAME=VALUE` from a command-line option -> (name, value); anything else is one error naming the form."""
    name, sep, value = spec.partition("=")
    if not sep or not name or not value:
        raise ConfigError(f"bad {flag} {spec!r}: expected {form}")
    return name, value


def parse_named_files(specs: list[str], flag: str, form: str = "NAME=FILE") -> dict[str, Path]:
    """The `NAME=FILE` values of a repeatable option, in order; a name given twice is an error, not a silent pick."""
    files: dict[str, Path] = {}
    for spec in specs:
        name, path = split_named(spec, flag, form)
        if name in files:
            raise ConfigError(f"{flag} names {name!r} twice")
        files[name] = Path(path)
    return files


def demo_task_files() -> list[TaskFiles]:
    """The small AG News / TweetEval sample bundled with the package (see demo_data/README.md)."""
    root = Path(str(resources.files("mtl") / "demo_data"))
    return [
        TaskFiles(task, root / folder / "train.jsonl", root / folder / "validation.jsonl")
        for task, folder in DEMO_TASKS.items()
    ]
