"""`mtl-onnx predict` and `mtl-onnx evaluate`: the same predictor either way, PyTorch on a checkpoint or ONNX Runtime
on an export folder (which never imports torch)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from mtl.artifacts.reports import check_output_file
from mtl.cli.options import (
    BatchSizeOption,
    DeviceOption,
    Execution,
    LabelField,
    ModelArg,
    PrecisionOption,
    TextField,
    ThreadsOption,
    TrustRemoteCode,
    check_input_files,
    check_stdout,
    console,
    setup_logging,
    user_errors,
)
from mtl.data.sources import FORMATS
from mtl.errors import ConfigError, DataError, OutputError
from mtl.extras import require_extra
from mtl.text import printable, printable_json

InputFormat = Enum("InputFormat", {name: name for name in FORMATS}, type=str)
Engine = Enum("Engine", {"local": "local", "ray": "ray"}, type=str)
# The ray engine's choices; kept here (not imported from mtl.scale.job) so that the CLI never imports pyarrow or ray.
OutputFormat = Enum("OutputFormat", {"parquet": "parquet", "jsonl": "jsonl"}, type=str)
# A stream's rows are classified once its input pauses this long, and at most this long after the first of them
# arrived: `tail -f log | mtl-onnx predict` gets each result promptly, a file still fills whole chunks.
INPUT_PAUSE_S = 0.05
CHUNK_WAIT_S = 0.5


def evaluate(
    checkpoint: ModelArg,
    task: Annotated[list[str], typer.Option("--task", "-t", help="NAME=FILE with labelled examples; repeatable.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics here as JSON.")] = None,
    batch_size: BatchSizeOption = 64,
    text_field: TextField = "text",
    label_field: LabelField = "label",
    precision: PrecisionOption = "auto",
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Per-task accuracy, macro-F1 and macro-recall of a checkpoint or an export on labelled files."""
    with user_errors():
        from mtl.artifacts.jsonfile import write_json
        from mtl.cli.tables import metrics_table, print_tables
        from mtl.data.files import parse_named_files
        from mtl.evaluate import evaluate_files

        files = parse_named_files(task, "--task")
        check_input_files(files.values())
        if json_out:
            check_output_file(json_out, [checkpoint, *files.values()])  # before the model is loaded and scored
        else:
            check_stdout("the metrics table")
        predictor = _load_predictor("evaluate", checkpoint, precision, device, False, threads, "fused",
                                    trust_remote_code)
        for name in files:
            predictor.config.task(name)  # unknown task: fail before any work
        results = evaluate_files(predictor, files, text_field, label_field, batch_size)
        title = f"{checkpoint}" + (f" ({predictor.precision})" if hasattr(predictor, "precision") else "")
        print_tables(metrics_table(title, results))
        if json_out:
            write_json(json_out, results)


def predict(
    checkpoint: ModelArg,
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[Optional[list[str]], typer.Option(  # str: a Path would fold the // of s3:// URIs
        help="A .jsonl, .csv or .tsv file, else one text a line (.txt); a FIFO, <(...) or - for stdin; repeatable, "
             "read in order. Without a suffix (stdin, /dev/fd/N): JSON Lines when the first non-blank line starts "
             "with '{', else one text a line; --format says otherwise. UTF-8, or UTF-16/32 with a byte-order "
             "mark.")] = None,
    input_format: Annotated[Optional[InputFormat], typer.Option(
        "--format", help="Read every --file as this format, whatever its name (e.g. --file - --format csv).")] = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Only these tasks; repeatable.")] = None,
    text_field: TextField = "text",
    batch_size: BatchSizeOption = 64,
    precision: PrecisionOption = "auto",
    device: DeviceOption = "cpu",
    fallback_cpu: Annotated[bool, typer.Option(help="Run on CPU when --device cuda is not available.")] = False,
    threads: ThreadsOption = None,
    execution: Annotated[Execution, typer.Option(
        help="Export folders: fused (one graph, every head) or split (encoder, then the requested heads).")] = "fused",
    trust_remote_code: TrustRemoteCode = False,
    engine: Annotated[Engine, typer.Option(
        help="local: this process, JSON lines on stdout. ray: Ray Data, a Predictor per actor, shards into "
             "--output (export folders only).")] = "local",
    output: Annotated[Optional[Path], typer.Option(
        help="--engine ray: the folder of prediction shards (published whole, with _SUCCESS last).")] = None,
    output_format: Annotated[OutputFormat, typer.Option(
        help="--engine ray: the shards' format (--format is the input's).")] = "parquet",
    address: Annotated[Optional[str], typer.Option(
        help="--engine ray: join the Ray cluster at this address (default: start a local Ray on this machine).")
    ] = None,
    actors: Annotated[Optional[int], typer.Option(
        min=1, help="--engine ray: actors, each with its own Predictor (default: the cluster's CPUs // "
                    "--threads-per-actor).")] = None,
    threads_per_actor: Annotated[Optional[int], typer.Option(
        min=1, help="--engine ray: CPUs each actor reserves = its ONNX Runtime threads (default: on a local Ray "
                    "without --actors, one actor with every core; else 1).")] = None,
    id_field: Annotated[Optional[str], typer.Option(
        help="--engine ray: a field / column of the input carried to each record (JSON Lines, CSV, Parquet).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(
        help="--engine ray: replace an --output folder that holds an earlier run's predictions.")] = False,
) -> None:
    """Classify texts: one JSON line per input with each task's label, score and probabilities.

    N rows in give N rows out: a row that cannot be classified (empty, not UTF-8, bad JSON) gets an "error"
    field in its place, and the command then exits with code 1. With --engine ray the same records (plus "row",
    the position across all inputs) go into a folder of Parquet or JSON Lines shards; inputs may then also be
    .parquet files, folders, globs and URIs (s3://, gs://, hdfs://, file://)."""
    with user_errors():
        from mtl.data.files import open_rows, rows_from_arguments

        output_format = getattr(output_format, "value", output_format)
        ray_options = {"--output": output, "--address": address, "--actors": actors, "--id-field": id_field,
                       "--threads-per-actor": threads_per_actor, "--overwrite": overwrite,
                       "--output-format": output_format}
        if getattr(engine, "value", engine) == "ray":
            return _predict_on_ray(checkpoint, texts, file, input_format, task, text_field, batch_size, precision,
                                   device, threads, execution, ray_options)
        defaults = {"--overwrite": False, "--output-format": "parquet"}
        given = [name for name, value in ray_options.items() if value != defaults.get(name)]
        if given:
            raise ConfigError(f"{given[0]} is an option of --engine ray; the local engine writes JSON lines to "
                              f"stdout")
        if not texts and not file:
            raise ConfigError("no input: give texts as arguments or --file (use --file - for stdin)")
        check_stdout("the predictions")
        fmt = getattr(input_format, "value", input_format)
        sources = [_located(path, open_rows(path, text_field, fmt=fmt)) for path in file or []]  # a bad file fails now
        predictor = _load_predictor("predict", checkpoint, precision, device, fallback_cpu, threads, execution,
                                    trust_remote_code)
        tasks = predictor.check_tasks(task)
        rows = itertools.chain(rows_from_arguments(list(texts or [])), *sources)
        written, failed = _stream_predictions(predictor, rows, tasks, batch_size)
        if failed:
            raise DataError(f"{failed} of {written} rows could not be classified (see their \"error\")")


def _predict_on_ray(export: Path, texts, files, input_format, tasks, text_field: str, batch_size: int, precision,
                    device, threads, execution, ray_options: dict) -> None:
    """`--engine ray`: `mtl.scale.job` over the files, a progress bar here, and a last line with rows and rows/s."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mtl.artifacts.manifest import is_export_folder

    if texts or not files:
        raise ConfigError("--engine ray reads --file inputs (files, folders, globs, URIs); give texts in a file")
    if ray_options["--output"] is None:
        raise ConfigError("--engine ray writes a folder of shards: give it with --output DIR")
    if not is_export_folder(export):
        raise ConfigError(f"{export}: --engine ray runs export folders (from `mtl-onnx export`); this is not one")
    if threads is not None or getattr(device, "value", device) != "cpu":
        raise ConfigError("--engine ray runs on CPU with --threads-per-actor threads per actor; --threads and "
                          "--device are the local engine's")
    require_extra("ray", "predict --engine ray")
    setup_logging(torch_side=False)
    from mtl.scale.inputs import Fields
    from mtl.scale.job import JobOptions, run_job

    options = JobOptions(
        export, list(tasks) if tasks else None,
        Fields(text_field, ray_options["--id-field"], getattr(input_format, "value", input_format)),
        getattr(precision, "value", precision), getattr(execution, "value", execution), batch_size,
        ray_options["--actors"], ray_options["--threads-per-actor"], ray_options["--output-format"],
        ray_options["--address"], ray_options["--overwrite"])
    with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        bar = progress.add_task("predict", total=None)
        result = run_job([str(f) for f in files], ray_options["--output"], options,
                         lambda done, total: progress.update(bar, completed=done, total=total))
    console.print(f"{result.rows:,} rows ({result.errors:,} with an error) in {result.shards} shards -> "
                  f"{printable(str(ray_options['--output']))}; {result.seconds:.1f} s, "
                  f"{result.rows / result.seconds:,.0f} rows/s", highlight=False, markup=False)
    if result.errors:
        raise DataError(f"{result.errors} of {result.rows} rows could not be classified (see their \"error\")")


def _located(path: str, rows):
    """The rows of one input file, their errors prefixed with the file and line (several files may be read)."""
    for row in rows:
        yield replace(row, error=f"{path}:{row.line}: {row.error}") if row.error else row


def _stream_predictions(predictor, rows, tasks: list[str], batch_size: int) -> tuple[int, int]:
    """Classify rows chunk by chunk and write each chunk's JSON lines before reading the next, so memory
    stays flat however long the input is. Returns (rows written, rows with an error)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    written = failed = 0
    chunk_size = max(1024, 16 * batch_size)  # enough rows for length sorting to pay off
    with Progress(SpinnerColumn(), TextColumn("{task.completed:,} rows"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        counter = progress.add_task("predict", total=None)
        for chunk in _chunks(rows, chunk_size):
            good = [row.text for row in chunk if row.error is None]
            records = iter(predictor.predict(good, tasks, batch_size) if good else [])
            lines = [_json_line({"text": row.text, "error": row.error} if row.error
                                else {"text": row.text, "predictions": next(records)}) for row in chunk]
            _write_whole(lines, written)
            written += len(chunk)
            failed += len(chunk) - len(good)
            progress.update(counter, completed=written)
    if not written:
        raise ConfigError("no input: the file holds no rows")
    return written, failed


def _json_line(record: dict) -> str:
    # allow_nan=False: a NaN would make the line invalid JSON; the records never hold one (prediction_records
    # refuses non-finite logits), and this keeps it so. printable_json: the output is often a terminal.
    return printable_json(json.dumps(record, ensure_ascii=False, allow_nan=False)) + "\n"


def _write_whole(lines: list[str], written: int) -> None:
    """Write a chunk of JSON lines to stdout, so that the output always ends at a line end: Ctrl-C during the
    write takes effect once the chunk is out, and a closed pipe or a full disk becomes one error line."""
    try:
        with _sigint_deferred():
            _write_stdout("".join(lines).encode("utf-8"))
    except BrokenPipeError:
        _silence_stdout()
        raise OutputError(f"the output was closed after {written:,} rows (broken pipe)") from None
    except OSError as err:
        _silence_stdout()
        raise OutputError(f"cannot write the output after {written:,} rows: {err.strerror or err}") from None


def _write_stdout(data: bytes) -> None:
    """All of `data` to stdout. Straight to the file descriptor, in a loop over partial writes: a signal that
    arrives while a buffered `sys.stdout` write waits on a full pipe makes CPython drop the unwritten rest."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # not a real file (a test runner's capture)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    sys.stdout.flush()  # whatever Python still buffers goes first
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextlib.contextmanager
def _sigint_deferred():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of the dead stream prints no second error."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _chunks(rows, size: int):
    """Chunks of at most `size` rows, read ahead by a thread: a chunk goes out when it is full, or when the input
    pauses (`INPUT_PAUSE_S`, at most `CHUNK_WAIT_S` after its first row), so a stream's rows are answered as they
    come while a file still fills whole chunks. An error of the reader is raised here, after the rows before it."""
    pending: queue.Queue = queue.Queue(maxsize=2 * size)
    stop = threading.Event()
    reader = threading.Thread(target=_read_ahead, args=(rows, pending, stop), daemon=True, name="predict-input")
    reader.start()
    try:
        item = pending.get()
        while item is not _END and not isinstance(item, BaseException):
            chunk, deadline = [item], time.monotonic() + CHUNK_WAIT_S
            while len(chunk) < size:
                item = _next_within(pending, min(INPUT_PAUSE_S, deadline - time.monotonic()))
                if item is None or item is _END or isinstance(item, BaseException):
                    break
                chunk.append(item)
            yield chunk
            if item is None or len(chunk) == size:
                item = pending.get()
        if isinstance(item, BaseException):
            raise item
    finally:
        stop.set()


_END = object()


def _read_ahead(rows, pending: queue.Queue, stop: threading.Event) -> None:
    """The reader thread: every row into `pending`, then `_END`, or the error that ended the reading."""
    try:
        for row in rows:
            if not _put(pending, row, stop):
                return
        _put(pending, _END, stop)
    except Exception as err:  # a DataError or OSError of the input: the main thread raises it
        _put(pending, err, stop)


def _put(pending: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        with contextlib.suppress(queue.Full):
            pending.put(item, timeout=0.1)
            return True
    return False


def _next_within(pending: queue.Queue, seconds: float):
    """The next item if one arrives within `seconds`, else None."""
    try:
        return pending.get(timeout=seconds) if seconds > 0 else pending.get_nowait()
    except queue.Empty:
        return None


def _load_predictor(command: str, model: Path, precision: str, device: str, fallback_cpu: bool,
                    threads: Optional[int], execution: str, trust_remote_code: bool = False):
    """An export folder (it has a manifest) runs on ONNX Runtime and never imports torch or transformers;
    anything else is loaded as a PyTorch checkpoint, once it is known to be one and the train extra is installed."""
    precision, device, execution = (getattr(v, "value", v) for v in (precision, device, execution))
    from mtl.artifacts.checkpoint import check_checkpoint
    from mtl.artifacts.manifest import check_choices, is_export_folder

    check_choices(precision, device, execution)
    if not Path(model).is_dir():
        raise ConfigError(f"{model}: no such folder; give a checkpoint (from `mtl-onnx train`) or an export folder "
                          f"(from `mtl-onnx export`)")
    if is_export_folder(model):
        setup_logging(torch_side=False)
        from mtl.runtime import Predictor

        predictor = Predictor.load(model, precision, device, threads, execution, fallback_cpu=fallback_cpu)
        console.print(escape(printable(providers_line(predictor.providers()))), highlight=False, soft_wrap=True)
        return predictor
    if (precision, device, threads, execution) != ("auto", "cpu", None, "fused"):
        raise ConfigError(f"{model}: --precision, --device, --threads and --execution apply to export folders "
                          f"(from `mtl-onnx export`); this is not one")
    check_checkpoint(model)
    require_extra("train", f"{command} on a PyTorch checkpoint (an export folder needs no extra)",
                  ("torch", "transformers", "safetensors"))
    setup_logging()
    from mtl.model import TorchPredictor

    return TorchPredictor.load(model, trust_remote_code)


def providers_line(providers: dict[str, list[str]]) -> str:
    """One line of what ONNX Runtime's sessions actually run on (`session.get_providers()`, not what was asked
    for: ORT falls back to CPU silently), e.g. "running on CPUExecutionProvider: model.int8.onnx"."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for graph, names in providers.items():
        groups.setdefault(tuple(names), []).append(graph)
    return "; ".join(f"running on {', '.join(names)}: {', '.join(graphs)}" for names, graphs in groups.items())
