"""The inputs of `predict --engine ray`: which files, in which order, how many rows each, and their rows as Arrow
tables with a global `row` number. pyarrow only (no ray, no torch).

- What the user names: local files, folders (their readable files, sorted by path, hidden and `_` files skipped as
  Spark and pyarrow skip them), globs, and URIs pyarrow's file systems open (`s3://`, `gs://`, `hdfs://`; a folder
  URI is listed the same way; `file://` is a local path).
- Formats: `.parquet` through pyarrow; every other file through the one reader layer (`mtl.data.files.open_rows`),
  so a bad row is an error record in its place, exactly as local `predict` has it (a text file behind a URI is
  copied to a local temporary file first, as that layer reads local files).
- `row` numbers: every file's row count is known before the first prediction (Parquet from its footer, the others
  by one pass of the same reader that later reads them), so each file's rows are numbered from where the files
  before it end, and any read task can number its rows without seeing the others.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from mtl.data.files import CSV_SUFFIXES, JSONL_SUFFIXES, open_rows
from mtl.errors import DataError
from mtl.scale.records import text_error

PARQUET_SUFFIX = ".parquet"
FOLDER_SUFFIXES = (PARQUET_SUFFIX, ".txt", *JSONL_SUFFIXES, *CSV_SUFFIXES)
CHUNK_ROWS = 4096  # rows per Arrow table a read task hands on
_GLOB = set("*?[")


@dataclass(frozen=True)
class InputFile:
    """One file to read: a local path or a URI, how to read it, and where its rows start across all inputs."""

    name: str  # a local path, or a URI
    fmt: str  # "parquet", or a reader format (None: by suffix) as `open_rows` takes it
    rows: int = 0
    first_row: int = 0

    @property
    def remote(self) -> bool:
        return "://" in self.name


@dataclass(frozen=True)
class Fields:
    text: str = "text"
    id: str | None = None
    input_format: str | None = None  # --format: how to read files that are not Parquet


def resolve_inputs(names: list[str], fields: Fields) -> list[InputFile]:
    """Every file the names stand for, in the order given (a folder's or glob's files sorted by path), each with
    its row count and first row. A name that matches nothing, or a file that cannot be read, is one `DataError`."""
    files = [file for name in names for file in _expand(str(name), fields)]
    counted, start = [], 0
    for file in files:
        rows = count_rows(file, fields)
        counted.append(InputFile(file.name, file.fmt, rows, start))
        start += rows
    return counted


def _expand(name: str, fields: Fields) -> list[InputFile]:
    if "://" in name:  # file:// too: it takes the same path as s3:// (and is how the tests reach that path)
        return [_input(uri, fields) for uri in _remote_files(name)]
    path = Path(name)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and _listed(p.relative_to(path).parts))
        if not found:
            raise DataError(f"{name}: folder holds no readable file ({', '.join(FOLDER_SUFFIXES)})")
        return [_input(str(p), fields) for p in found]
    if not path.exists() and _GLOB & set(name):
        found = sorted(p for p in glob.glob(name, recursive=True) if os.path.isfile(p))
        if not found:
            raise DataError(f"{name}: no file matches this pattern")
        return [_input(p, fields) for p in found]
    if name == "-" or (path.exists() and not path.is_file()):
        raise DataError(f"{name}: --engine ray reads regular files (each twice: its rows are counted first, so that "
                        f"every row gets its number); save a stream to a file first")
    return [_input(name, fields)]


def _listed(parts: tuple[str, ...]) -> bool:
    """A file inside a folder is read when no part of its path is hidden or `_`-named (`_SUCCESS`, `.staging`)
    and its suffix is a readable one."""
    return not any(part.startswith((".", "_")) for part in parts) and Path(parts[-1]).suffix.lower() in \
        FOLDER_SUFFIXES


def _input(name: str, fields: Fields) -> InputFile:
    suffix = Path(name.split("://", 1)[-1]).suffix.lower()
    if suffix == PARQUET_SUFFIX:
        return InputFile(name, "parquet")
    plain_text = fields.input_format == "txt" or (
        not fields.input_format and suffix and suffix not in JSONL_SUFFIXES + CSV_SUFFIXES)
    if fields.id is not None and plain_text:
        raise DataError(f"{name}: plain text has no fields, so --id-field {fields.id!r} cannot be read from it")
    return InputFile(name, fields.input_format or "")


def _remote_files(uri: str) -> list[str]:
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.Directory:
            infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
            paths = sorted(i.path for i in infos if i.type == fs.FileType.File
                           and _listed(tuple(Path(i.path[len(path):].lstrip("/")).parts)))
            if not paths:
                raise DataError(f"{uri}: folder holds no readable file ({', '.join(FOLDER_SUFFIXES)})")
            scheme = uri.split("://", 1)[0]
            return [f"{scheme}://{p}" for p in paths]
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{uri}: cannot read it ({err})") from None
    if info.type != fs.FileType.File:
        raise DataError(f"{uri}: file not found")
    return [uri]


def count_rows(file: InputFile, fields: Fields) -> int:
    """The rows `read_rows` will give for this file: the Parquet footer's count, or one pass of the reader."""
    if file.fmt == "parquet":
        with _parquet(file) as parquet:
            _check_columns(file, parquet.schema_arrow, fields)
            return parquet.metadata.num_rows
    with _local_copy(file) as path:
        return sum(1 for _ in open_rows(path, fields.text, fmt=file.fmt or None, id_field=fields.id))


def read_rows(file: InputFile, fields: Fields, id_type: pa.DataType | None) -> Iterator[pa.Table]:
    """The file's rows as Arrow tables of at most CHUNK_ROWS rows: `row`, the id column if asked for, `text` and
    `error` (set for a row the reader refuses, prefixed with the file and line like local `predict`'s)."""
    number = file.first_row
    if file.fmt == "parquet":
        columns = [fields.text] + ([fields.id] if fields.id else [])
        with _parquet(file) as parquet:
            for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
                texts = batch.column(fields.text).to_pylist()
                start = number - file.first_row + 1
                errors = [_located(f"{file.name}: row {start + i}", text_error(text, fields.text))
                          for i, text in enumerate(texts)]
                ids = batch.column(fields.id).cast(id_type) if fields.id else None
                yield _table(number, texts, errors, ids, fields)
                number += len(texts)
        return
    with _local_copy(file) as path:
        rows = open_rows(path, fields.text, fmt=file.fmt or None, id_field=fields.id)
        while chunk := [row for _, row in zip(range(CHUNK_ROWS), rows)]:
            errors = [_located(f"{file.name}:{row.line}", row.error) for row in chunk]
            ids = pa.array([_id_text(row.key) for row in chunk], pa.string()) if fields.id else None
            yield _table(number, [row.text for row in chunk], errors, ids, fields)
            number += len(chunk)


def id_type(files: list[InputFile], fields: Fields) -> pa.DataType | None:
    """The id column's type: the Parquet inputs' own when every input is Parquet and they agree (ids join back to
    the user's table as they are), else text (a CSV's fields are text; a JSON number is written as in the file)."""
    if fields.id is None:
        return None
    types = set()
    for file in files:
        if file.fmt != "parquet":
            return pa.string()
        with _parquet(file) as parquet:
            types.add(parquet.schema_arrow.field(fields.id).type)
    return types.pop() if len(types) == 1 else pa.string()


def _table(first: int, texts: list, errors: list, ids, fields: Fields) -> pa.Table:
    columns = {"row": pa.array(range(first, first + len(texts)), pa.int64())}
    if fields.id is not None:
        columns[fields.id] = ids
    columns["text"] = pa.array([t if isinstance(t, str) else "" for t in texts], pa.string())
    columns["error"] = pa.array(errors, pa.string())
    return pa.table(columns)


def _located(where: str, error: str | None) -> str | None:
    """A row's error prefixed with its file and line (or row), as local `predict` words it."""
    return None if error is None else f"{where}: {error}"


def _id_text(value) -> str | None:
    import json

    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _check_columns(file: InputFile, schema: pa.Schema, fields: Fields) -> None:
    for field in (fields.text, fields.id):
        if field is not None and field not in schema.names:
            raise DataError(f"{file.name}: no column {field!r} (columns: {', '.join(schema.names)}); choose one "
                            f"with --text-field/--id-field")


@contextlib.contextmanager
def _parquet(file: InputFile):
    import pyarrow.parquet as pq
    from pyarrow import fs

    try:
        if file.remote:
            filesystem, path = fs.FileSystem.from_uri(file.name)
            handle = filesystem.open_input_file(path)
        else:
            handle = pa.OSFile(file.name, "rb")
        with handle:
            yield pq.ParquetFile(handle)
    except FileNotFoundError:
        raise DataError(f"{file.name}: file not found") from None
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{file.name}: cannot read it as Parquet ({err})") from None


@contextlib.contextmanager
def _local_copy(file: InputFile) -> Iterator[str]:
    """A local path of the file: itself, or a temporary copy of a URI's bytes, removed afterwards."""
    if not file.remote:
        yield file.name
        return
    from pyarrow import fs

    folder = tempfile.mkdtemp(prefix="mtl-onnx-input-")
    try:
        local = Path(folder) / Path(file.name.split("://", 1)[1]).name
        try:
            filesystem, path = fs.FileSystem.from_uri(file.name)
            with filesystem.open_input_stream(path) as source, open(local, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        except (OSError, pa.ArrowException) as err:
            raise DataError(f"{file.name}: cannot read it ({err})") from None
        yield str(local)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
