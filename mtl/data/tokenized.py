"""Training rows on disk, so that memory stays flat however many rows a task has.

A task's file is read and checked by the one reader layer (`mtl.data.files.checked_examples`) into an Arrow file
of texts and labels ("rows"), then tokenized by a batched `datasets` map, in `num_proc` processes, into Arrow files
of token ids ("tokens") that training memory-maps: a row costs its bytes on disk, not ~8 KB of Python lists.

Both are kept in a cache folder and found again by what they were made from, so a second run over the same files
reads neither the files nor the tokenizer's output again:
- rows: the file's size and sha256, its suffix (which decides its format), the text and label fields;
- tokens: the rows' key, the tokenizer (its serialized pipeline), the max length, the encoder's input names and the
  task's label order.
An entry is built in a staging folder and renamed into place whole, so a killed or failed build leaves nothing a
later run would read; two runs building the same entry each finish, and the second keeps the first's. A stream
(stdin, a FIFO, a process substitution) has no bytes to key by before it is read: its entries are the run's own,
removed when the run ends (`TokenCache.close`). Needs the `train` extra (datasets, pyarrow).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter

from mtl.artifacts.digests import FileDigest, file_digest
from mtl.artifacts.fields import need, number, strings
from mtl.artifacts.jsonfile import read_json, write_json
from mtl.artifacts.publish import OWNER_FILE, new_staging
from mtl.config import Range
from mtl.data.files import Example, LabelCheck, checked_examples
from mtl.errors import ConfigError, DataError

# Bumped whenever what an entry holds changes, so an older entry is never read as a newer one.
log = logging.getLogger(__name__)

CACHE_FORMAT = 1
ENTRY_FILE = "entry.json"
CACHE_ENV = "MTL_ONNX_CACHE"
# Rows per tokenizer call and per Arrow record batch. Reading a memory-mapped Arrow stream touches each record
# batch's header, and the kernel maps the 64 KiB around every page touched: datasets' 1,000-row batches cost ~70
# resident bytes a row (490 MB at 7M rows) just to open the tokens; 10,000-row batches a tenth of that.
ROWS_PER_BATCH = 10_000
# Progress is drawn for work that takes a while: reading that lasts longer than this, tokenizing this many rows.
PROGRESS_AFTER_SECONDS = 2.0
PROGRESS_FROM_ROWS = 50_000
_ROWS = Range(1, 2**40, whole=True)
_LINE = Range(0, 2**62, whole=True)


def default_cache() -> Path:
    """$MTL_ONNX_CACHE, else $XDG_CACHE_HOME/mtl-onnx, else ~/.cache/mtl-onnx."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mtl-onnx"


@dataclass(frozen=True)
class RowsEntry:
    """A checked file as Arrow rows: where they are, how many, and each label with the line it first appears on
    (in the order met: what a validation file's labels are checked with, without reading it again)."""

    folder: Path
    source: Path
    rows: int
    first_lines: dict[str, int]
    key: str | None  # None: a stream's rows, the run's own
    digest: FileDigest | None  # the file's size and sha256 as read; None for a stream


@dataclass(frozen=True)
class Tokenization:
    """How texts become token ids: everything the tokens depend on besides the texts and the label order."""

    tokenizer: Any
    max_length: int
    input_names: tuple[str, ...]

    def key(self) -> dict[str, Any]:
        return {"tokenizer": tokenizer_fingerprint(self.tokenizer), "max_length": self.max_length,
                "input_names": list(self.input_names)}


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what decides a fast tokenizer's output: its class and its serialized pipeline (normalizer,
    pre-tokenizer, model, post-processor, added tokens), without the truncation and padding a call sets. Any other
    tokenizer is fingerprinted by `datasets`' own hasher (its pickled state)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        from datasets.fingerprint import Hasher

        return Hasher.hash(tokenizer)
    pipeline = json.loads(backend.to_str())
    pipeline.pop("truncation", None)
    pipeline.pop("padding", None)
    text = json.dumps([type(tokenizer).__name__, pipeline], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class TokenCache:
    """The cache folder's rows and tokens entries (`folder/rows/KEY`, `folder/tokens/KEY`), and a run's own
    entries for streams, removed by `close`. `num_proc`: processes for the tokenizing map."""

    def __init__(self, folder: Path, num_proc: int = 1):
        if num_proc < 1:
            raise ConfigError(f"--num-proc must be at least 1, got {num_proc}")
        self.folder = Path(folder)
        self.num_proc = num_proc
        self._private: list[Path] = []
        try:
            for kind in ("rows", "tokens"):
                (self.folder / kind).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--data-cache {self.folder}: cannot use it as the tokenized-data cache "
                              f"({err.strerror or err}); name a writable folder") from None

    def close(self) -> None:
        for folder in self._private:
            shutil.rmtree(folder, ignore_errors=True)
        self._private.clear()

    def rows(self, source: Path, text_field: str, label_field: str, known: tuple[str, ...] | None = None,
             description: str = "") -> RowsEntry:
        """The checked rows of `source`, from the cache or read now. `known`: the training labels a validation
        file's labels must be among (checked on a cached entry too, naming the line as reading would)."""
        before = _regular_stat(source)
        key = digest = None
        if before is not None:
            digest = file_digest(source)
            key = _hash({"format": CACHE_FORMAT, "data": digest.to_dict(), "suffix": source.suffix,
                         "text_field": text_field, "label_field": label_field})
            entry = self._cached_rows(key, source, digest)
            if entry is not None:
                _check_known(entry, known)
                return entry
        staging = self._staging("rows", key)
        try:
            first_lines, count = self._write_rows(source, text_field, label_field, known, staging, description)
            if before is not None and _regular_stat(source) != before:
                raise DataError(f"{source}: it changed while it was being read; train again once it is written")
            write_json(staging / ENTRY_FILE, {"format": CACHE_FORMAT, "source": str(source), "rows": count,
                                              "first_lines": first_lines})
            folder = self._publish(staging, "rows", key)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return RowsEntry(folder, source, count, first_lines, key, digest)

    def tokens(self, rows: RowsEntry, labels: tuple[str, ...], tokenization: Tokenization,
               description: str = "") -> datasets.Dataset:
        """`rows` tokenized, with each label as its index in `labels`: a memory-mapped Dataset whose columns are
        the input names (token lists, unpadded) and `labels`."""
        key = None
        if rows.key is not None:  # a cached rows entry: its tokens can be cached too
            key = _hash({"format": CACHE_FORMAT, "rows": rows.key, "labels": list(labels),
                         **tokenization.key()})
            cached = self._cached_tokens(key, rows.rows)
            if cached is not None:
                return cached
        staging = self._staging("tokens", key)
        try:
            shards = self._write_tokens(rows, labels, tokenization, staging, description)
            write_json(staging / ENTRY_FILE, {"format": CACHE_FORMAT, "rows": rows.rows, "shards": shards})
            folder = self._publish(staging, "tokens", key)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return _load_shards(folder, shards, rows.rows)

    def _write_rows(self, source: Path, text_field: str, label_field: str, known: tuple[str, ...] | None,
                    staging: Path, description: str) -> tuple[dict[str, int], int]:
        features = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("string")})
        first_lines: dict[str, int] = {}
        count = 0
        rows_file = str(staging / "rows.arrow")
        with ArrowWriter(features=features, path=rows_file, writer_batch_size=ROWS_PER_BATCH) as writer, \
                _progress(f"Reading {description or source}", "rows") as progress:
            for batch in _batches(checked_examples(source, text_field, label_field, labels=known)):
                for example in batch:
                    first_lines.setdefault(example.label, example.line)
                writer.write_batch({"text": [e.text for e in batch], "label": [e.label for e in batch]})
                count += len(batch)
                progress.update(len(batch))
            writer.finalize()
        return first_lines, count

    def _write_tokens(self, rows: RowsEntry, labels: tuple[str, ...], tokenization: Tokenization, staging: Path,
                      description: str) -> list[str]:
        names = tokenization.input_names
        features = datasets.Features({
            **{name: datasets.Sequence(datasets.Value("int32" if name == "input_ids" else "int8")) for name in names},
            "labels": datasets.Value("int32"),
        })
        texts = datasets.Dataset.from_file(str(rows.folder / "rows.arrow"))
        label_index = {label: index for index, label in enumerate(labels)}
        encode = _Encode(tokenization.tokenizer, tokenization.max_length, names, label_index)
        with _map_progress(rows.rows >= PROGRESS_FROM_ROWS):
            tokens = texts.map(
                encode, batched=True, batch_size=ROWS_PER_BATCH, writer_batch_size=ROWS_PER_BATCH,
                remove_columns=["text", "label"], features=features,
                num_proc=self.num_proc if self.num_proc > 1 else None,
                cache_file_name=str(staging / "tokens.arrow"), new_fingerprint="mtl-onnx-tokens",
                desc=f"Tokenizing {description or rows.source}",
            )
        shards = sorted({Path(f["filename"]).name for f in tokens.cache_files})
        del texts, tokens  # unmapped before their folder is renamed
        return shards

    def _cached_rows(self, key: str, source: Path, digest: FileDigest) -> RowsEntry | None:
        folder = self.folder / "rows" / key
        entry = self._entry(folder)
        if entry is None:
            return None
        try:
            count = number(entry, "rows", _ROWS)
            first_lines = need(entry, "first_lines", dict)
            for label in first_lines:
                number(first_lines, label, _LINE, "first_lines.")
            if not (folder / "rows.arrow").is_file():
                raise ValueError("rows.arrow is missing")
        except (KeyError, ValueError) as err:
            return self._discard(folder, err)
        return RowsEntry(folder, source, count, first_lines, key, digest)

    def _cached_tokens(self, key: str, count: int) -> datasets.Dataset | None:
        folder = self.folder / "tokens" / key
        entry = self._entry(folder)
        if entry is None:
            return None
        try:
            if number(entry, "rows", _ROWS) != count:
                raise ValueError(f"{entry['rows']} rows where the data has {count}")
            return _load_shards(folder, list(strings(entry, "shards")), count)
        except (KeyError, ValueError, OSError) as err:
            return self._discard(folder, err)

    def _entry(self, folder: Path) -> dict | None:
        if not folder.is_dir():
            return None
        try:
            entry = read_json(folder / ENTRY_FILE)
            if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
                raise ValueError(f"not a format-{CACHE_FORMAT} entry")
        except (OSError, ValueError) as err:
            return self._discard(folder, err)
        return entry

    def _discard(self, folder: Path, why: Exception) -> None:
        """An entry that cannot be read (damaged, or another version's) is rebuilt, never trusted."""
        log.warning("rebuilding the cached data in %s (%s)", folder, why)
        shutil.rmtree(folder, ignore_errors=True)
        return None

    def _staging(self, kind: str, key: str | None) -> Path:
        if key is None:
            staging = new_staging(self.folder / kind / "stream", where=self.folder / kind)
            self._private.append(staging)
            return staging
        return new_staging(self.folder / kind / key, where=self.folder / kind)

    def _publish(self, staging: Path, kind: str, key: str | None) -> Path:
        if key is None:
            return staging  # a stream's: the run's own, removed by close()
        target = self.folder / kind / key
        try:
            # The owner file goes only once the entry is in place: without it, another run starting now (a second
            # torchrun process) would take this staging folder for a killed run's and remove it mid-rename.
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another run built the same entry first: the same bytes
            return target
        (target / OWNER_FILE).unlink(missing_ok=True)
        return target


class _Encode:
    """The batched map: texts to unpadded token ids (the collator pads each batch to its own longest row), label
    names to indices. A class, not a closure, so `num_proc` worker processes can receive it."""

    def __init__(self, tokenizer, max_length: int, input_names: tuple[str, ...], label_index: dict[str, int]):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.input_names, self.label_index = input_names, label_index

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        encoded = self.tokenizer(batch["text"], truncation=True, max_length=self.max_length, padding=False)
        columns = {name: encoded[name] for name in self.input_names}
        columns["labels"] = [self.label_index[label] for label in batch["label"]]
        return columns


def row_lengths(tokens: datasets.Dataset) -> np.ndarray:
    """Tokens per row, from the Arrow list offsets alone (no row is read)."""
    column = tokens.data.column("input_ids")
    return np.concatenate([pc.list_value_length(chunk).to_numpy(zero_copy_only=False) for chunk in column.chunks]
                          or [np.zeros(0, dtype=np.int32)])


def _load_shards(folder: Path, shards: list[str], count: int) -> datasets.Dataset:
    parts = []
    for shard in shards:
        path = folder / shard
        if Path(shard).name != shard or not path.is_file():
            raise ValueError(f"shard {shard!r} is not a file of the entry")
        parts.append(datasets.Dataset.from_file(str(path)))
    tokens = datasets.concatenate_datasets(parts) if len(parts) != 1 else parts[0]
    if len(tokens) != count:
        raise ValueError(f"{len(tokens)} rows where the data has {count}")
    return tokens


def _check_known(entry: RowsEntry, known: tuple[str, ...] | None) -> None:
    """A cached validation file's labels, checked against the training labels as reading it would."""
    if known is None:
        return
    check = LabelCheck(entry.source, known)
    for label, line in sorted(entry.first_lines.items(), key=lambda item: item[1]):
        check.add(Example("", label, line))


def _batches(examples: Iterator[Example]) -> Iterator[list[Example]]:
    batch: list[Example] = []
    for example in examples:
        batch.append(example)
        if len(batch) == ROWS_PER_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(description: str, unit: str):
    """A count of rows read, drawn once reading has taken `PROGRESS_AFTER_SECONDS` (a small file, or one whose
    first row is bad, prints nothing but its result); `datasets.disable_progress_bars()` silences it too."""
    from datasets.utils.tqdm import tqdm

    return tqdm(desc=description, unit=f" {unit}", unit_scale=True, delay=PROGRESS_AFTER_SECONDS)


@contextlib.contextmanager
def _map_progress(shown: bool) -> Iterator[None]:
    """`datasets` draws a bar for every map; only one over many rows is worth a line of the user's terminal."""
    if shown or datasets.are_progress_bars_disabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


def _regular_stat(source: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime) of a regular file, or None for a stream (stdin, a FIFO, /dev/fd/N)."""
    if str(source) == "-":
        return None
    try:
        info = source.stat()
    except OSError:
        return None  # the reader names what is wrong with it
    if not stat.S_ISREG(info.st_mode):
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
