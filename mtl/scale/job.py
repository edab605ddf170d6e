"""`mtl-onnx predict --engine ray`: files in, a published folder of prediction shards out.

    inputs ──(driver: resolve, count rows)──> read tasks ──> actors (one Predictor each) ──> shard writers
                                                                                 ──> driver: progress, checks, publish

The output folder is built as every folder the tool writes is (`mtl.artifacts.publish.staged`): a staging folder
beside the target, claimed by this process, renamed into place only when every row is in a shard and the `_SUCCESS`
marker (what Spark and Hadoop write, and what their users wait for) is written last. A run that fails, is
interrupted (Ctrl-C, SIGTERM) or is killed leaves no folder that looks complete: at most a hidden `.NAME.*.staging`
folder without `_SUCCESS`, which the next run to the same target removes.

Shards are named by their first row (`part-000000001024.parquet`), so a shard a retried Ray task writes again
replaces itself; the driver checks that the shards it was told of hold every input row, and drops any other file.
The output folder must be one path every node writes (local, or a shared file system), as must the inputs and the
export.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from mtl.artifacts.environment import usable_cores
from mtl.artifacts.publish import check_target, staged
from mtl.errors import ConfigError, MissingDependencyError, OutputError, UserError
from mtl.extras import install_command
from mtl.scale.inputs import Fields, InputFile, id_type, read_rows, resolve_inputs
from mtl.scale.predict import DEFAULT_BATCH_SIZE, THREADS_PER_ACTOR, checked_export, predict_dataset
from mtl.scale.records import json_line

SUCCESS = "_SUCCESS"
OUTPUT_FORMATS = ("parquet", "jsonl")
SHARD_ROWS = 16_384
_SHARD = re.compile(r"part-\d{12}\.(parquet|jsonl)")
_REMOTE_ERROR = re.compile(r"^mtl\.errors\.(\w+): (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class JobOptions:
    export: Path
    tasks: list[str] | None = None
    fields: Fields = field(default_factory=Fields)
    precision: str = "auto"
    execution: str = "fused"
    batch_size: int = DEFAULT_BATCH_SIZE
    actors: int | None = None
    threads_per_actor: int | None = None  # None: see `actor_threads`
    output_format: str = "parquet"
    address: str | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class JobResult:
    rows: int
    errors: int
    shards: int
    seconds: float  # from the call to the published folder, Ray's start-up included


def run_job(inputs: list[str], output: Path, options: JobOptions,
            progress: Callable[[int, int], None] = lambda done, total: None) -> JobResult:
    """Predict every row of `inputs` into the folder `output`; `progress(rows done, rows in all)` as shards land."""
    started = time.perf_counter()
    ray = _import_ray()
    if options.output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown output format {options.output_format!r}; valid: {', '.join(OUTPUT_FORMATS)}")
    options = replace(options, threads_per_actor=actor_threads(options))
    THREADS_PER_ACTOR.check("--threads-per-actor", options.threads_per_actor)
    checked_export(options.export, options.tasks, options.precision, options.execution, options.batch_size)
    output = Path(output)
    check_target(output, "prediction folder", _is_prediction_folder, options.overwrite, OutputError)
    files = resolve_inputs(inputs, options.fields)  # a missing file or column fails before Ray starts
    total = sum(file.rows for file in files)
    if not total:
        raise ConfigError("no input: the files hold no rows")
    # SIGTERM is taken over after ray.init, which installs its own handler (a stack dump, then death).
    with warnings.catch_warnings(), staged(output) as staging, _ray_session(ray, options.address), \
            _terminate_as_interrupt():
        # A small input gives fewer blocks than actors; Ray says so on stderr, which is no news to the user.
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
        shards = _predict_into(ray, files, staging, options, total, progress)
        (staging / SUCCESS).write_bytes(b"")
    return JobResult(total, sum(s["errors"] for s in shards), len(shards), time.perf_counter() - started)


def actor_threads(options: JobOptions) -> int:
    """The threads (and CPUs) of each actor: as asked; else, on a local Ray with no actor count given, one actor with
    every core, as local `predict` runs one session on them all (measured on 2 cores: one 2-thread actor kept 0.79x
    of local predict's throughput, two 1-thread actors 0.50x, each running ONNX Runtime on one thread with the
    driver's work on the same cores); else 1, which fits any node of a cluster whose sizes are not known here."""
    if options.threads_per_actor is not None:
        return options.threads_per_actor
    return usable_cores() if options.address is None and options.actors is None else 1


def _predict_into(ray, files: list[InputFile], staging: Path, options: JobOptions, total: int,
                  progress: Callable[[int, int], None]) -> list[dict]:
    """Run the pipeline, writing shards into `staging`; the shards' stats once they hold exactly the input rows."""
    fields = options.fields
    read = ray.data.from_items([{"file": i} for i in range(len(files))], override_num_blocks=len(files))
    # Reading and writing reserve no CPU: the actors hold every core, and a read task that waited for one would
    # starve them. Their work (JSON parsing, Parquet encoding) is small against the model's.
    rows = read.map_batches(_read_files, fn_kwargs={"files": files, "fields": fields,
                                                    "id_type": id_type(files, fields)},
                            batch_size=1, batch_format="pyarrow", num_cpus=0,
                            **_task_pool(ray, max(1, min(len(files), 4))))
    predicted = predict_dataset(rows, options.export, options.tasks, "text", actors=options.actors,
                                threads_per_actor=options.threads_per_actor, precision=options.precision,
                                execution=options.execution, batch_size=options.batch_size)
    written = predicted.map_batches(_write_shard, fn_kwargs={"folder": str(staging), "fmt": options.output_format},
                                    batch_size=SHARD_ROWS, batch_format="pyarrow", num_cpus=0)
    shards, done = [], 0
    try:
        for batch in written.iter_batches(batch_size=None, batch_format="pyarrow"):
            for shard in batch.to_pylist():
                shards.append(shard)
                done += shard["rows"]
                progress(done, total)
    except Exception as err:
        raise user_error(err) or err
    _check_shards(staging, shards, total)
    return shards


def _task_pool(ray, size: int) -> dict:
    """At most `size` tasks at once: `compute=TaskPoolStrategy(size=...)` where Ray has it (2.51 deprecates the
    `concurrency` argument that older releases take instead)."""
    strategy = getattr(ray.data, "TaskPoolStrategy", None)
    if strategy is not None and "size" in inspect.signature(strategy).parameters:
        return {"compute": strategy(size=size)}
    return {"concurrency": size}


def _read_files(batch: pa.Table, files: list[InputFile], fields: Fields, id_type) -> Iterator[pa.Table]:
    for index in batch.column("file").to_pylist():
        yield from read_rows(files[index], fields, id_type)


def _write_shard(batch: pa.Table, folder: str, fmt: str) -> pa.Table:
    """Write one shard, rows in order, under its first row's name (a temporary name first, so a shard is whole or
    absent); its stats are the one row this returns."""
    import pyarrow.parquet as pq

    table = batch.sort_by("row")
    first = table.column("row")[0].as_py()
    name = f"part-{first:012d}.{fmt}"
    temporary = Path(folder) / f".{name}.tmp"
    if fmt == "parquet":
        pq.write_table(table, temporary)
    else:
        temporary.write_text("".join(map(json_line, table.to_pylist())), encoding="utf-8")
    os.replace(temporary, Path(folder) / name)
    errors = table.num_rows - table.column("error").null_count
    return pa.table({"shard": [name], "rows": [table.num_rows], "errors": [errors]})


def _check_shards(staging: Path, shards: list[dict], total: int) -> None:
    """Every input row is in exactly one reported shard, and nothing else is in the folder."""
    written = sum(shard["rows"] for shard in shards)
    names = {shard["shard"] for shard in shards}
    if written != total or len(names) != len(shards):
        raise OutputError(f"the shards hold {written:,} rows in {len(names)} files for {total:,} input rows; "
                          f"nothing was published")
    missing = sorted(name for name in names if not (staging / name).is_file())
    if missing:  # written by a worker on another node, into its own disk
        raise OutputError(f"{len(missing)} of {len(names)} shards were written on other nodes, not in {staging.parent}"
                          f"; on a cluster, --output must be a folder every node shares")
    for path in staging.iterdir():
        if _SHARD.fullmatch(path.name) and path.name not in names:
            path.unlink()  # a retried task's shard, superseded


def _is_prediction_folder(folder: Path) -> bool:
    names = [path.name for path in folder.iterdir()]
    return SUCCESS in names and all(name == SUCCESS or _SHARD.fullmatch(name) for name in names)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependencyError(f"--engine ray needs Ray Data; install it with {install_command('ray')}") from None
    return ray


@contextlib.contextmanager
def _ray_session(ray, address: str | None) -> Iterator[None]:
    """Join the cluster at `address`, or start a local Ray sized to this machine; shut down at the end (on a
    cluster that only disconnects, which also ends this job's actors). A process that already runs Ray (a caller
    of `run_job` in its own session) keeps its session. Ray Data's own progress bars are off: the CLI draws one
    for the whole job."""
    # Ray's start-up notes (token authentication, deprecations) are not the user's business here; a failure still
    # reaches the user as the Python exception Ray raises.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    owned = not ray.is_initialized()
    if owned and address:
        _check_reachable(address)
    if owned:
        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(address="local", num_cpus=usable_cores(), **quiet)
        except ConnectionError as err:
            raise ConfigError(f"--address {address}: cannot join a Ray cluster there ({err})") from None
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        yield
    finally:
        if owned:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """A `HOST:PORT` address must answer, or Ray would retry for minutes before it gives up."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", ray://, or a form Ray itself judges
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({err.strerror or err}); start one "
                          f"with `ray start --head --port={port}` or give its head's address") from None


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler stopping the job, `kill`) unwinds like Ctrl-C, so the staging folder is removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        # None: the handler was not Python's (Ray's); the default ends the process, as a SIGTERM should.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def user_error(error: BaseException) -> UserError | None:
    """The user's mistake a Ray task or actor raised (an export folder that changed, a model computing NaN), as its
    own one-line error without Ray's wrapping. Ray ships a worker's exception to the driver as a `RayTaskError`
    holding Ray Data's `UserCodeException`, whose `__cause__` (the error itself) is lost on the way; then only the
    remote traceback's text names it, as `mtl.errors.NAME: message`."""
    import mtl.errors

    seen, err = set(), error
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, UserError):
            return err
        cause = getattr(err, "cause", None)
        err = cause if isinstance(cause, BaseException) else err.__cause__
    for name, message in reversed(_REMOTE_ERROR.findall(str(error))):
        kind = getattr(mtl.errors, name, None)
        if isinstance(kind, type) and issubclass(kind, UserError):
            return kind(message)
    return None
