"""`mtl-onnx predict` and `mtl-onnx evaluate`: the same predictor either way, PyTorch on a checkpoint or ONNX Runtime
on an export folder (which never imports torch)."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from mtl.cli.options import (
    BatchSizeOption,
    DeviceOption,
    Execution,
    LabelField,
    ModelArg,
    PrecisionOption,
    TextField,
    ThreadsOption,
    console,
    setup_logging,
    user_errors,
)
from mtl.errors import ConfigError, DataError


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
) -> None:
    """Per-task accuracy, macro-F1 and macro-recall of a checkpoint or an export on labelled files."""
    with user_errors():
        from mtl.cli.tables import metrics_table
        from mtl.data.files import parse_named_files
        from mtl.evaluate import evaluate_files

        files = parse_named_files(task, "--task")
        predictor = _load_predictor(checkpoint, precision, device, False, threads, "fused")
        for name in files:
            predictor.config.task(name)  # unknown task: fail before any work
        results = evaluate_files(predictor, files, text_field, label_field, batch_size)
        title = f"{checkpoint}" + (f" ({predictor.precision})" if hasattr(predictor, "precision") else "")
        Console().print(metrics_table(title, results))
        if json_out:
            json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def predict(
    checkpoint: ModelArg,
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[Optional[Path], typer.Option(help="A .txt (one text a line), .jsonl or .csv file; - for stdin.")] = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Only these tasks; repeatable.")] = None,
    text_field: TextField = "text",
    batch_size: BatchSizeOption = 64,
    precision: PrecisionOption = "auto",
    device: DeviceOption = "cpu",
    fallback_cpu: Annotated[bool, typer.Option(help="Run on CPU when --device cuda is not available.")] = False,
    threads: ThreadsOption = None,
    execution: Annotated[Execution, typer.Option(
        help="Export folders: fused (one graph, every head) or split (encoder, then the requested heads).")] = "fused",
) -> None:
    """Classify texts: one JSON line per input with each task's label, score and probabilities.

    N rows in give N rows out: a row that cannot be classified (empty, not UTF-8, bad JSON) gets an "error"
    field in its place, and the command then exits with code 1."""
    with user_errors():
        from mtl.data.stream import iter_rows, rows_from_arguments

        if not texts and not file:
            raise ConfigError("no input: give texts as arguments or --file (use --file - for stdin)")
        predictor = _load_predictor(checkpoint, precision, device, fallback_cpu, threads, execution)
        tasks = predictor.check_tasks(task)
        rows = itertools.chain(rows_from_arguments(list(texts or [])), iter_rows(file, text_field) if file else ())
        written, failed = _stream_predictions(predictor, rows, tasks, batch_size)
        if failed:
            raise DataError(f"{failed} of {written} rows could not be classified (see their \"error\")")


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
            lines = []
            for row in chunk:
                out = {"text": row.text, "error": row.error} if row.error else {"text": row.text, "predictions": next(records)}
                lines.append(json.dumps(out, ensure_ascii=False) + "\n")
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
            written += len(chunk)
            failed += len(chunk) - len(good)
            progress.update(counter, completed=written)
    if not written:
        raise ConfigError("no input: the file holds no rows")
    return written, failed


def _chunks(rows, size: int):
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _load_predictor(model: Path, precision: str, device: str, fallback_cpu: bool, threads: Optional[int],
                    execution: str):
    """An export folder (it has a manifest) runs on ONNX Runtime and never imports torch or transformers;
    anything else is loaded as a PyTorch checkpoint."""
    precision, device, execution = (getattr(v, "value", v) for v in (precision, device, execution))
    from mtl.artifacts.manifest import check_choices, is_export_folder

    check_choices(precision, device, execution)
    if is_export_folder(model):
        setup_logging(torch_side=False)
        from mtl.runtime import Predictor

        return Predictor.load(model, precision, device, threads, execution, fallback_cpu=fallback_cpu)
    if (precision, device, threads, execution) != ("auto", "cpu", None, "fused"):
        raise ConfigError(f"{model}: --precision, --device, --threads and --execution apply to export folders "
                          f"(from `mtl-onnx export`); this is not one")
    setup_logging()
    from mtl.model import TorchPredictor

    return TorchPredictor.load(model)


