"""Reading labelled text files (JSONL, CSV, TSV) into examples, and the label sets of tasks.

No torch here: the runtime and the CLI read the same files. Every problem becomes one `DataError`
whose message names the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mtl.errors import ConfigError, DataError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
DEMO_TASKS = {"topic": "ag_news", "sentiment": "tweet_eval_sentiment"}


@dataclass(frozen=True)
class Example:
    text: str
    label: str | None
    line: int  # 1-based line in its file, for error messages


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


def read_examples(
    path: Path, text_field: str = "text", label_field: str | None = "label"
) -> list[Example]:
    """All examples of a JSONL/CSV/TSV file. `label_field=None` reads unlabelled text."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    content = _decode(path)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        examples = list(_read_jsonl(path, content, text_field, label_field))
    elif suffix in CSV_SUFFIXES:
        examples = list(_read_csv(path, content, text_field, label_field, suffix))
    else:
        valid = ", ".join(JSONL_SUFFIXES + CSV_SUFFIXES)
        raise DataError(f"{path}: unknown file type {suffix or '(none)'!r}; valid: {valid}")
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty)")
    return examples


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        bad = raw[err.start : err.start + 1].hex()
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{bad}); save the file as UTF-8") from None


def _read_jsonl(path: Path, content: str, text_field: str, label_field: str | None):
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield _example(path, number, record, text_field, label_field)


def _read_csv(path: Path, content: str, text_field: str, label_field: str | None, suffix: str):
    reader = csv.DictReader(io.StringIO(content), delimiter="\t" if suffix == ".tsv" else ",")
    for record in reader:
        yield _example(path, reader.line_num, record, text_field, label_field)


def _example(path: Path, number: int, record: dict, text_field: str, label_field: str | None) -> Example:
    fields = [text_field] + ([label_field] if label_field else [])
    for name in fields:
        if record.get(name) is None:
            have = ", ".join(str(k) for k in record) or "none"
            raise DataError(f"{path}:{number}: missing field {name!r} (fields present: {have})")
    text = record[text_field]
    if not isinstance(text, str):
        raise DataError(f"{path}:{number}: field {text_field!r} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DataError(f"{path}:{number}: empty text")
    label = None
    if label_field:
        label = record[label_field]
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(f"{path}:{number}: label must be a string or integer, got {label!r}")
        label = str(label)
        if not label.strip():
            raise DataError(f"{path}:{number}: empty label")
    return Example(text=text, label=label, line=number)


def label_set(examples: list[Example]) -> tuple[str, ...]:
    """The task's labels, sorted, from its training examples."""
    return tuple(sorted({e.label for e in examples if e.label is not None}))


def check_labels(path: Path, examples: list[Example], labels: tuple[str, ...]) -> None:
    """Every example's label must be one the model knows."""
    known = set(labels)
    for example in examples:
        if example.label not in known:
            raise DataError(
                f"{path}:{example.line}: label {example.label!r} is not one of the training labels "
                f"({', '.join(labels)})"
            )


def demo_task_files() -> list[TaskFiles]:
    """The small AG News / TweetEval sample bundled with the package (see demo_data/README.md)."""
    root = Path(str(resources.files("mtl") / "demo_data"))
    return [
        TaskFiles(task, root / folder / "train.jsonl", root / folder / "validation.jsonl")
        for task, folder in DEMO_TASKS.items()
    ]
