"""Reading texts and labelled rows: JSON Lines, CSV/TSV, plain text (one text a line), from files, FIFOs, process
substitutions and stdin. No torch.

One reader for every command. `open_rows` yields each row in file order, lazily (memory stays bounded whatever the
file size, and a stream's rows come as its lines arrive), as a `Row`: its text, its label when asked for, the line
it starts on, and an error when it cannot be used. Strict callers (training, evaluation, export validation, the
bench corpus) use `read_examples`, which stops at the first bad row with one `DataError` naming file and line;
lenient callers (predict) keep a bad row in its place as an error record, so N rows in give N rows out.

How a source is opened, decoded (UTF-8, or UTF-16/32 with a byte-order mark), cut into lines (`\\n`, `\\r\\n` or
`\\r`) and which format it is read as: `mtl.data.sources`. Valid but unusual input is read as what it is: any Unicode
a JSON string can hold (a lone surrogate such as `\\ud800`, which no tokenizer accepts, is that row's error),
U+2028 / U+0085 inside a text, fields of any size, CSV quoting (a quote that never closes is an error naming the
line where it opened). A text a person would see nothing of (zero-width or control characters only) is refused
like an empty one, and so is one holding NUL characters (binary data, or UTF-16 without a byte-order mark).
Messages quote a file's content only as a short escaped snippet.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from mtl.data.sources import FORMATS, SUFFIX_FORMATS, Lines, Source, open_source, sniff_format, strip_line_end
from mtl.errors import ConfigError, DataError
from mtl.text import (
    describe_look_alikes,
    is_blank,
    label_problem,
    label_shape,
    look_alike_key,
    shortened,
    snippet,
)

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BINARY = "holds NUL characters: binary data, not text (or UTF-16 without a byte-order mark; save it as UTF-8)"
DEMO_TASKS = {"topic": "ag_news", "sentiment": "tweet_eval_sentiment"}
# Python's csv refuses fields over 131,072 characters by default; a long document in a CSV is still one text.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Row:
    """One row as read: `text` is writable as UTF-8 even for a bad row (undecodable bytes shown as U+FFFD)."""

    text: str
    line: int  # 1-based line of the file where the row starts (0: a command-line argument)
    label: str | None = None
    error: str | None = None
    key: Any = None  # the value of `id_field` (a JSON value, or a CSV string) when one is asked for; None if absent


@dataclass(frozen=True)
class Example:
    """A usable row: a non-empty text and, for labelled data, a non-empty label."""

    text: str
    label: str | None
    line: int  # 1-based line in its file, for error messages


def text_problem(text: Any) -> str | None:
    """Why `text` cannot be classified, or None: it must be a string of valid Unicode that a person can see."""
    if not isinstance(text, str):
        return f"expected a string, got {type(text).__name__}"
    if "\x00" in text:
        return _BINARY
    if is_blank(text):
        return "empty text" if not text or text.isspace() else "empty text (only invisible or control characters)"
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
              plain_text: bool = True, fmt: str | None = None, id_field: str | None = None) -> Iterator[Row]:
    """Rows of a source (a path, or `-` for stdin) in the format `fmt` (one of FORMATS), else the one its suffix
    names, else the one its first line shows (see `mtl.data.sources`). Problems with the source as a whole
    (missing, a folder, unknown type, no such CSV column) raise `DataError` before the first row of a regular file
    is handed out; a stream (stdin, a FIFO) is only opened when its first row is wanted. Problems with a row come
    back as that row's error. `id_field`: each JSON or CSV row's value of that field is its `key`, carried along
    (a row that cannot be parsed has none)."""
    source_ = open_source(source)
    fmt = _declared_format(source_, fmt, plain_text and label_field is None)
    rows = _rows(source_, fmt, text_field, label_field, plain_text and label_field is None, id_field)
    if not source_.regular:
        return rows
    first = next(rows, None)  # a regular file is checked now (header, encoding), not at its first row's turn
    return rows if first is None else itertools.chain([first], rows)


def _declared_format(source: Source, fmt: str | None, plain_text: bool) -> str | None:
    """The format to read: declared, else by suffix; None when the source has no suffix and its first line decides.
    `plain_text`: a source may be one text a line (predict), so any unknown suffix reads as that."""
    readable = [f for f in FORMATS if plain_text or f != "txt"]
    if fmt is not None:
        if fmt not in readable:
            raise DataError(f"{source.name}: cannot read it as {fmt!r}; valid formats here: {', '.join(readable)}")
        return fmt
    if not source.suffix:
        return None
    by_suffix = SUFFIX_FORMATS.get(source.suffix, "txt")
    if by_suffix in readable:
        return by_suffix
    valid = ", ".join(JSONL_SUFFIXES + CSV_SUFFIXES)
    raise DataError(f"{source.name}: unknown file type {source.suffix!r}; valid: {valid} (or a file without a "
                    f"suffix, read by its first line)")


def _rows(source: Source, fmt: str | None, text_field: str, label_field: str | None,
          plain_text: bool, id_field: str | None = None) -> Iterator[Row]:
    lines = Lines(source)
    try:
        stream: Iterator[str] = lines
        if fmt is None:
            fmt, stream = sniff_format(lines, plain_text)
        if fmt == "jsonl":
            yield from _jsonl(lines, stream, text_field, label_field, id_field)
        elif fmt in ("csv", "tsv"):
            yield from _csv(lines, stream, text_field, label_field, "\t" if fmt == "tsv" else ",", id_field)
        else:
            yield from _text_lines(lines, stream)
    finally:
        lines.close()


def read_examples(path: Path, text_field: str = "text", label_field: str | None = "label",
                  limit: int | None = None, labels: tuple[str, ...] | None = None) -> list[Example]:
    """Every row (the first `limit`) of a JSON Lines or CSV/TSV source as a list: `checked_examples`."""
    return list(checked_examples(path, text_field, label_field, labels, limit))


def checked_examples(path: Path, text_field: str = "text", label_field: str | None = "label",
                     labels: tuple[str, ...] | None = None, limit: int | None = None) -> Iterator[Example]:
    """The rows (the first `limit`) of a JSON Lines or CSV/TSV source one at a time, each checked as it is read, so
    that a file of any size is checked in bounded memory: stops with one `DataError` naming file and line at the
    first bad row, at a label that looks like an earlier one but differs (`LabelCheck`), and, given `labels`, at a
    label not among them. `label_field=None` reads unlabelled text. A source without rows is an error."""
    check = LabelCheck(path, labels) if label_field is not None else None
    count = 0
    for row in itertools.islice(open_rows(path, text_field, label_field, plain_text=False), limit):
        if row.error:
            raise DataError(f"{path}:{row.line}: {row.error}")
        example = Example(row.text, row.label, row.line)
        if check is not None:
            check.add(example)
        count += 1
        yield example
    if not count:
        raise DataError(f"{path}: no examples (the file is empty)")


def _text_lines(lines: Lines, stream: Iterable[str]) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        text = strip_line_end(line)
        error = lines.undecodable(text)
        yield Row(_writable(text), number, error=error) if error else _text_row(text, number)


def _text_row(text: str, line: int) -> Row:
    problem = text_problem(text)
    return Row(_writable(text), line, error=problem) if problem else Row(text, line)


def _jsonl(lines: Lines, stream: Iterable[str], text_field: str, label_field: str | None,
           id_field: str | None = None) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        line = strip_line_end(line)
        error = lines.undecodable(line) or (_BINARY if "\x00" in line else None)
        if error:
            yield Row(_writable(line), number, error=error)
            continue
        if not line.strip():
            continue  # blank lines separate nothing in JSON Lines: they are not rows
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield Row(_writable(line), number, error=f"not valid JSON ({err.msg} at column {err.colno})")
            continue
        except RecursionError:
            yield Row(_writable(line), number, error="JSON nested too deeply to read")
            continue
        if not isinstance(record, dict):
            yield Row(_writable(line), number, error=f"expected a JSON object, got {type(record).__name__}")
            continue
        yield _keyed(_record_row(record, number, text_field, label_field, None), record, id_field)


def _csv(lines: Lines, stream: Iterable[str], text_field: str, label_field: str | None,
         delimiter: str, id_field: str | None = None) -> Iterator[Row]:
    name = lines.source.name
    reader = csv.DictReader(stream, delimiter=delimiter, strict=True)
    try:
        columns = reader.fieldnames or []
    except csv.Error as err:
        raise DataError(f"{name}:1: the header row is not valid CSV ({err})") from None
    header = delimiter.join(columns)
    problem = lines.undecodable(header) or (_BINARY if "\x00" in header else None)
    if problem:
        raise DataError(f"{name}:1: the header row: {problem}")
    for field in (text_field, label_field, id_field):
        if field is not None and field not in columns:
            have = shortened(", ".join(columns)) if columns else "none"
            raise DataError(f"{name}: no column {field!r} (columns: {have}); choose one with --text-field/"
                            f"--label-field/--id-field")
    yield from _csv_rows(reader, text_field, label_field, lines, id_field)


def _csv_rows(reader: csv.DictReader, text_field: str, label_field: str | None, lines: Lines,
              id_field: str | None) -> Iterator[Row]:
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
        yield _keyed(_record_row(record, start, text_field, label_field, lines), record, id_field)


def _keyed(row: Row, record: dict, id_field: str | None) -> Row:
    key = record.get(id_field) if id_field is not None else None
    return row if key is None else replace(row, key=key)


def _record_row(record: dict, line: int, text_field: str, label_field: str | None, lines: Lines | None) -> Row:
    """One JSON object or CSV record as a row. `lines`: a CSV's, whose fields hold the bytes that did not decode
    (a JSON line holding such bytes is refused whole before it is parsed)."""
    text = record.get(text_field)
    if text is None:
        have = ", ".join(str(k) for k in record if k is not None) or "none"
        return Row("", line, error=f"missing field {text_field!r} (fields present: {shortened(have)})")
    if not isinstance(text, str):
        return Row("", line, error=f"field {text_field!r}: must be a string, got {type(text).__name__}")
    undecodable = lines.undecodable(text) if lines is not None else None
    problem = undecodable or text_problem(text)
    if problem:
        return Row(_writable(text), line, error=undecodable or f"field {text_field!r}: {problem}")
    if label_field is None:
        return Row(text, line)
    label = record.get(label_field)
    if label is None:
        return Row(text, line, error=f"missing field {label_field!r}")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        return Row(text, line, error=f"label must be a string or integer, got {snippet(json.dumps(label))}")
    label = str(label)
    problem = (lines.undecodable(label) if lines is not None else None) or _label_text_problem(label)
    if problem:
        return Row(text, line, error=f"label {snippet(label)}: {problem}")
    return Row(text, line, label=label)


@functools.lru_cache(maxsize=4096)  # a task has few labels, read on every row
def _label_text_problem(label: str) -> str | None:
    if not label.strip():
        return "empty label"
    return label_problem(label) or text_problem(label)


def _writable(text: str) -> str:
    """The text with anything that cannot be written as UTF-8 (lone surrogates) shown as U+FFFD: a row's text is
    data, written as JSON; the terminal's escaping is `mtl.text.printable`."""
    return _SURROGATE.sub("\ufffd", text) if not text.isascii() else text


class LabelCheck:
    """A file's labels, checked as its rows are read (each distinct label once, so a row costs a set lookup).

    Two labels a person cannot tell apart (Unicode normal forms, invisible characters) would train as two classes
    that every report shows as one: refused, naming both lines and both labels escaped. Given `known` (the training
    labels, for a validation or evaluation file), a label outside them is refused, and a look-alike of one is named
    as such. `distinct`: the first example of each label, in the order met."""

    def __init__(self, path: Path | str, known: tuple[str, ...] | None = None):
        self.path = path
        self.known = known
        self.known_keys = {look_alike_key(label): label for label in known or ()}
        self.first: dict[str, Example] = {}  # look-alike key -> first example with it
        self.distinct: dict[str, Example] = {}

    def add(self, example: Example) -> None:
        if example.label in self.distinct:
            return
        key = look_alike_key(example.label)
        if self.known is not None and example.label not in self.known:
            twin = self.known_keys.get(key)
            if twin is not None:
                raise DataError(f"{self.path}:{example.line}: {describe_look_alikes(example.label, twin)} (the second "
                                f"is the training label); write it as the training file does")
            raise DataError(f"{self.path}:{example.line}: label {snippet(example.label)} is not one of the training "
                            f"labels ({shortened(', '.join(self.known))})")
        seen = self.first.setdefault(key, example)
        if seen.label != example.label:
            raise DataError(f"{self.path}:{example.line}: {describe_look_alikes(seen.label, example.label)} (line "
                            f"{seen.line}: Unicode normal form or invisible characters); write them the same way")
        self.distinct[example.label] = example


def label_set(labels: Iterable[str]) -> tuple[str, ...]:
    """The task's labels, sorted, from the labels of its training rows (each once or many times). Labels that differ
    only by case, compatibility form or whitespace are kept apart (they may be meant so) but named in a warning, as
    they are usually a typo."""
    labels = tuple(sorted(set(labels)))
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label_shape(label), []).append(label)
    for similar in groups.values():
        if len(similar) > 1:
            log.warning("labels %s differ only by case, width or whitespace; they are kept as different classes",
                        ", ".join(repr(label) for label in similar))
    return labels


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
