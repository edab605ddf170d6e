"""`mtl-onnx`: one Typer app over training, evaluation, prediction, export, benchmarking and the quickstart.

The top of this module imports no torch: commands import what they need when they run, so
`mtl-onnx --help` and the ONNX paths start fast.
"""

from __future__ import annotations

import itertools
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from mtl.config import DEFAULT_BACKBONE, TrainConfig
from mtl.corpus import TaskFiles, demo_task_files
from mtl.cli_bench import bench, run_quick_bench
from mtl.cli_common import CheckpointArg, LabelField, TextField, console, setup_logging, user_errors
from mtl.errors import ConfigError, DataError

app = typer.Typer(
    name="mtl-onnx",
    help="Train a multi-task text classifier in PyTorch, export it to ONNX, run it fast anywhere.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class Pooling(str, Enum):
    cls = "cls"
    mean = "mean"


class Sampling(str, Enum):
    uniform = "uniform"
    proportional = "proportional"
    temperature = "temperature"


TaskOption = Annotated[
    list[str], typer.Option("--task", "-t", help="NAME=TRAIN_FILE[,VALIDATION_FILE]; repeat for each task.")
]
OutputOption = Annotated[Path, typer.Option("--output", "-o", help="Folder for the trained model.")]


@app.command()
def train(
    task: TaskOption,
    output: OutputOption = Path("runs/model"),
    backbone: Annotated[str, typer.Option(help="Hugging Face id or local folder of the encoder.")] = DEFAULT_BACKBONE,
    pooling: Annotated[Pooling, typer.Option(help="How token vectors become one sentence vector.")] = Pooling.cls,
    max_length: Annotated[int, typer.Option(min=2, help="Tokens kept per text.")] = 128,
    epochs: Annotated[float, typer.Option(min=0.0)] = 3.0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many optimizer steps (overrides --epochs).")] = -1,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per device per forward pass.")] = 8,
    grad_accumulation: Annotated[int, typer.Option(min=1)] = 4,
    encoder_lr: Annotated[float, typer.Option(help="Learning rate of the encoder.")] = 2e-5,
    head_lr_multiplier: Annotated[float, typer.Option(help="Heads learn this many times faster.")] = 5.0,
    layer_lr_decay: Annotated[float, typer.Option(help="Per-layer LR factor below the top layer (1 = off).")] = 1.0,
    weight_decay: float = 0.01,
    warmup_steps: Annotated[int, typer.Option(help="Clamped to 10% of the run's optimizer steps.")] = 500,
    warmup_ratio: Annotated[Optional[float], typer.Option(help="Warmup as a share of the run.")] = None,
    max_grad_norm: float = 1.0,
    freeze_backbone: Annotated[bool, typer.Option(help="Train the heads only.")] = False,
    freeze_head: Annotated[Optional[list[str]], typer.Option(help="Keep this task's head fixed; repeatable.")] = None,
    progressive_unfreezing: Annotated[bool, typer.Option(help="Epoch 0 heads, 1 + top layers, 2+ all.")] = False,
    unfreeze_top_layers: Annotated[Optional[int], typer.Option(help="Layers opened in epoch 1 (default: top quarter).")] = None,
    unfreeze_from_layer: Annotated[Optional[int], typer.Option(help="Or: first layer index opened in epoch 1.")] = None,
    sampling: Annotated[Sampling, typer.Option(help="How often each task is drawn.")] = Sampling.proportional,
    temperature: Annotated[float, typer.Option(help="T for temperature sampling: p ∝ n^(1/T).")] = 2.0,
    mixed_batches: Annotated[bool, typer.Option("--mixed-batches/--single-task-batches")] = True,
    seed: int = 42,
    text_field: TextField = "text",
    label_field: LabelField = "label",
    attn_implementation: Annotated[Optional[str], typer.Option(help="eager, sdpa, ... (DeBERTa-v2: eager).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --output.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a model already in --output.")] = False,
) -> None:
    """Train one shared encoder with a head per task."""
    with user_errors():
        config = TrainConfig(
            output_dir=str(output), epochs=epochs, max_steps=max_steps, batch_size=batch_size,
            grad_accumulation=grad_accumulation, encoder_lr=encoder_lr, head_lr_multiplier=head_lr_multiplier,
            layer_lr_decay=layer_lr_decay, weight_decay=weight_decay, warmup_steps=warmup_steps,
            warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm, freeze_backbone=freeze_backbone,
            freeze_heads=tuple(freeze_head or ()), progressive_unfreezing=progressive_unfreezing,
            unfreeze_top_layers=unfreeze_top_layers, unfreeze_from_layer=unfreeze_from_layer,
            sampling=sampling.value, temperature=temperature, mixed_batches=mixed_batches, seed=seed,
        )
        task_files = [TaskFiles.parse(spec) for spec in task]
        _run_training(task_files, config, backbone, pooling.value, max_length, text_field, label_field,
                      overwrite, resume, attn_implementation)


def _run_training(task_files, config, backbone, pooling, max_length, text_field, label_field, overwrite, resume,
                  attn_implementation=None):
    setup_logging()
    from mtl import workflow
    from mtl.display import metrics_table
    from mtl.progress import RichProgressCallback

    callback = RichProgressCallback(console, tuple(t.name for t in task_files))
    result = workflow.train(
        task_files, config, backbone, pooling, max_length, text_field, label_field, overwrite, resume,
        attn_implementation, callbacks=[callback],
    )
    if not result.main_process:
        return result
    if result.metrics:
        console.print(metrics_table("validation, best checkpoint", result.metrics))
    console.print(
        f"trained on {result.examples_seen:,} sampled examples (of {result.dataset_examples:,}) in {result.wall_seconds:.0f} s "
        f"({result.examples_per_second:.1f} examples/s); model saved in [bold]{result.output}[/bold]"
    )
    return result


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(
        help="A checkpoint folder (PyTorch) or an export folder from `mtl-onnx export` (ONNX Runtime).")],
    task: Annotated[list[str], typer.Option("--task", "-t", help="NAME=FILE with labelled examples; repeatable.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics here as JSON.")] = None,
    batch_size: int = 64,
    text_field: TextField = "text",
    label_field: LabelField = "label",
    precision: Annotated[str, typer.Option(help="Export folders: auto, fp32, int8 or fp16.")] = "auto",
    device: Annotated[str, typer.Option(help="Export folders: cpu or cuda.")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(help="Export folders: intra-op threads.")] = None,
) -> None:
    """Per-task accuracy, macro-F1 and macro-recall of a checkpoint or an export on labelled files."""
    with user_errors():
        files = {}
        for spec in task:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"bad task {spec!r}: expected NAME=FILE")
            files[name] = Path(path)
        from mtl import workflow
        from mtl.display import metrics_table

        predictor = _load_predictor(checkpoint, precision, device, False, threads, "fused")
        for name in files:
            predictor.config.task(name)  # unknown task: fail before any work
        results = workflow.evaluate(predictor, files, text_field, label_field, batch_size)
        title = f"{checkpoint}" + (f" ({predictor.precision})" if hasattr(predictor, "precision") else "")
        Console().print(metrics_table(title, results))
        if json_out:
            json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(
        help="A checkpoint folder (PyTorch) or an export folder from `mtl-onnx export` (ONNX Runtime, no torch).")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[Optional[Path], typer.Option(help="A .txt (one text a line), .jsonl or .csv file; - for stdin.")] = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Only these tasks; repeatable.")] = None,
    text_field: TextField = "text",
    batch_size: int = 64,
    precision: Annotated[str, typer.Option(
        help="Export folders: auto, fp32, int8 or fp16 (auto: int8 on CPU, fp16 on CUDA, where exported).")] = "auto",
    device: Annotated[str, typer.Option(help="Export folders: cpu or cuda.")] = "cpu",
    fallback_cpu: Annotated[bool, typer.Option(help="Run on CPU when --device cuda is not available.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="Export folders: intra-op threads (default: all available).")] = None,
    execution: Annotated[str, typer.Option(
        help="Export folders: fused (one graph, every head) or split (encoder, then the requested heads).")] = "fused",
) -> None:
    """Classify texts: one JSON line per input with each task's label, score and probabilities.

    N rows in give N rows out: a row that cannot be classified (empty, not UTF-8, bad JSON) gets an "error"
    field in its place, and the command then exits with code 1."""
    with user_errors():
        from mtl.predict_inputs import iter_rows, rows_from_arguments

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
    from mtl.runtime.manifest import is_export_folder
    from mtl.runtime.predictor import check_choices

    check_choices(precision, device, execution)
    if is_export_folder(model):
        setup_logging(torch_side=False)
        from mtl.runtime import Predictor

        return Predictor.load(model, precision, device, threads, execution, fallback_cpu=fallback_cpu)
    if (precision, device, threads, execution) != ("auto", "cpu", None, "fused"):
        raise ConfigError(f"{model}: --precision, --device, --threads and --execution apply to export folders "
                          f"(from `mtl-onnx export`); this is not one")
    setup_logging()
    from mtl.predict_torch import TorchPredictor

    return TorchPredictor.load(model)


@app.command()
def export(
    checkpoint: CheckpointArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the export; written only once validated.")],
    precision: Annotated[str, typer.Option(help="Comma-separated variants: fp32 (always made), int8 (CPU), fp16 (GPU).")] = "fp32",
    optimize: Annotated[bool, typer.Option(help="ONNX Runtime transformer fusion, kept only where measured faster.")] = False,
    validation_data: Annotated[Optional[list[str]], typer.Option(
        help="TASK=FILE of labelled examples: each variant's accuracy next to fp32's; repeatable.")] = None,
    max_int8_drop: Annotated[float, typer.Option(help="Refuse int8 if any task loses more accuracy points.")] = 1.0,
    force_int8: Annotated[bool, typer.Option(help="Keep int8 even when it loses more than --max-int8-drop.")] = False,
    int8_target: Annotated[str, typer.Option(help="auto, avx512_vnni, avx2 or arm64.")] = "auto",
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="Int8 weight scales.")] = True,
    opset: Annotated[int, typer.Option(help="ONNX opset, 14 to 20.")] = 17,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for PyTorch and ONNX Runtime.")] = None,
    text_field: TextField = "text",
    label_field: LabelField = "label",
    overwrite: Annotated[bool, typer.Option(help="Replace an export already in --output.")] = False,
    triton: Annotated[Optional[Path], typer.Option(help="Also write a Triton Inference Server model repository here.")] = None,
    triton_device: Annotated[str, typer.Option(help="Triton instances: cpu or gpu.")] = "cpu",
    triton_precision: Annotated[str, typer.Option(help="Variant Triton serves (auto: int8 on cpu, fp16 on gpu).")] = "auto",
) -> None:
    """Export a checkpoint to ONNX: the encoder, one head per task and the fused model, each validated against
    PyTorch on several shapes before anything is written."""
    with user_errors():
        from mtl.export.options import ExportOptions, parse_precisions, parse_validation_data

        options = ExportOptions(
            precisions=parse_precisions(precision), optimize=optimize, opset=opset,
            validation_data=parse_validation_data(validation_data or []), text_field=text_field,
            label_field=label_field, max_int8_drop=max_int8_drop, force_int8=force_int8, int8_target=int8_target,
            per_channel=per_channel, threads=threads, overwrite=overwrite,
        ).checked()
        if triton is not None:
            from mtl.export.triton import triton_config_module

            triton_config_module()  # a missing `triton` extra fails now, not after a long export
        result = _run_export(checkpoint, output, options)
        if triton is not None:
            from mtl.export.triton import write_triton_repository

            model = write_triton_repository(result.output, triton, device=triton_device, precision=triton_precision,
                                            overwrite=overwrite)
            console.print(f"Triton model repository in [bold]{escape(str(model))}[/bold] (config.pbtxt validated)")


def _run_export(checkpoint: Path, output: Path, options):
    """Export with a line per finished step, then the table of graphs and the real-data accuracy table."""
    setup_logging()
    from mtl.export import export_checkpoint
    from mtl.export.report import graphs_table, real_data_table

    def step_done(message: str, seconds: float) -> None:
        console.print(f"[green]✓[/green] {escape(message)} [dim]({seconds:.1f} s)[/dim]", highlight=False)

    with console.status("exporting"):
        result = export_checkpoint(checkpoint, output, options, on_step=step_done)
    Console().print(graphs_table(result))
    accuracy = real_data_table(result)
    if accuracy is not None:
        Console().print(accuracy)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print(f"exported to [bold]{escape(str(result.output))}[/bold] in {result.seconds:.0f} s")
    return result


@app.command()
def quickstart(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the model, its export and the bench.")] = Path("runs/quickstart"),
    epochs: Annotated[float, typer.Option(help="Passes over the demo data.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many optimizer steps (a smoke run).")] = -1,
    export: Annotated[bool, typer.Option(help="Export fp32 and int8 ONNX, validated on the demo data.")] = True,
    bench: Annotated[bool, typer.Option(help="Benchmark PyTorch against the export (needs --export).")] = True,
) -> None:
    """The whole tool on bundled demo data: train both demo tasks (AG News topic, TweetEval sentiment) on the
    default backbone, export fp32 and int8 ONNX with validation, and benchmark PyTorch against ONNX Runtime."""
    with user_errors():
        model_dir, onnx_dir = output / "model", output / "onnx"
        config = TrainConfig(output_dir=str(model_dir), epochs=epochs, max_steps=max_steps, encoder_lr=5e-5,
                             batch_size=16, grad_accumulation=2, logging_steps=10)
        task_files = demo_task_files()
        console.rule(f"1/3 train: {len(task_files)} demo tasks on {DEFAULT_BACKBONE}")
        _run_training(task_files, config, DEFAULT_BACKBONE, "cls", 128, "text", "label", overwrite=True, resume=False)
        if export:
            from mtl.export.options import ExportOptions

            console.rule("2/3 export: fp32 and int8, validated against PyTorch and on the demo validation data")
            # int8 is kept even past the 1-point limit here, so the demo always shows it; the table says the cost.
            _run_export(model_dir, onnx_dir, ExportOptions(
                precisions=("fp32", "int8"), validation_data={t.name: t.validation for t in task_files},
                force_int8=True, overwrite=True))
        if export and bench:
            console.rule("3/3 bench: PyTorch against ONNX Runtime on this machine")
            run_quick_bench(model_dir, onnx_dir, output)
        console.rule("done")
        console.print(f"checkpoint: [bold]{escape(str(model_dir))}[/bold]")
        if export:
            console.print(f"ONNX export: [bold]{escape(str(onnx_dir))}[/bold] (runs with onnxruntime + tokenizers only)")
            console.print(f"next: mtl-onnx predict {escape(str(onnx_dir))} \"Stocks rallied after the rate cut.\"")


app.command()(bench)


if __name__ == "__main__":
    app()
