"""`mtl-onnx`: one Typer app over training, evaluation and prediction.

The top of this module imports no torch: commands import what they need when they run, so
`mtl-onnx --help` and the ONNX paths start fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

from mtl.config import DEFAULT_BACKBONE, TrainConfig
from mtl.corpus import TaskFiles, demo_task_files
from mtl.errors import ConfigError, DataError, UserError

app = typer.Typer(
    name="mtl-onnx",
    help="Train a multi-task text classifier in PyTorch, export it to ONNX, run it fast anywhere.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


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
TextField = Annotated[str, typer.Option(help="Name of the text field / column.")]
LabelField = Annotated[str, typer.Option(help="Name of the label field / column.")]
CheckpointArg = Annotated[Path, typer.Argument(help="A checkpoint folder written by `mtl-onnx train`.")]


@contextlib.contextmanager
def user_errors():
    """A user's mistake becomes one red line and exit code 1; Ctrl-C exits 130. Bugs still raise."""
    try:
        yield
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        raise typer.Exit(130) from None
    except Exception as err:
        if isinstance(err, UserError):
            console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        raise


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=console, show_path=False)], format="%(message)s")
    logging.getLogger("mtl").setLevel(logging.INFO)
    import transformers

    transformers.logging.set_verbosity_error()


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
    _setup_logging()
    from mtl import workflow
    from mtl.progress import RichProgressCallback, metrics_table

    callback = RichProgressCallback(console, tuple(t.name for t in task_files))
    result = workflow.train(
        task_files, config, backbone, pooling, max_length, text_field, label_field, overwrite, resume,
        attn_implementation, callbacks=[callback],
    )
    if result.metrics:
        console.print(metrics_table("validation, best checkpoint", result.metrics))
    console.print(
        f"trained on {result.train_examples:,} examples in {result.wall_seconds:.0f} s "
        f"({result.examples_per_second:.1f} examples/s); model saved in [bold]{result.output}[/bold]"
    )
    return result


@app.command()
def evaluate(
    checkpoint: CheckpointArg,
    task: Annotated[list[str], typer.Option("--task", "-t", help="NAME=FILE with labelled examples; repeatable.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics here as JSON.")] = None,
    batch_size: int = 64,
    text_field: TextField = "text",
    label_field: LabelField = "label",
) -> None:
    """Per-task accuracy, macro-F1 and macro-recall of a checkpoint on labelled files."""
    with user_errors():
        files = {}
        for spec in task:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"bad task {spec!r}: expected NAME=FILE")
            files[name] = Path(path)
        _setup_logging()
        from mtl import workflow
        from mtl.predict_torch import TorchPredictor
        from mtl.progress import metrics_table

        predictor = TorchPredictor.load(checkpoint)
        for name in files:
            predictor.config.task(name)  # unknown task: fail before any work
        results = workflow.evaluate(predictor, files, text_field, label_field, batch_size)
        Console().print(metrics_table(f"{checkpoint}", results))
        if json_out:
            json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


@app.command()
def predict(
    checkpoint: CheckpointArg,
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[Optional[Path], typer.Option(help="A .txt (one text a line), .jsonl or .csv file; - for stdin.")] = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Only these tasks; repeatable.")] = None,
    text_field: TextField = "text",
    batch_size: int = 64,
) -> None:
    """Classify texts: one JSON line per input with each task's label, score and probabilities."""
    with user_errors():
        inputs = list(texts or []) + (_read_inputs(file, text_field) if file else [])
        if not inputs:
            raise ConfigError("no input: give texts as arguments or --file (use --file - for stdin)")
        _setup_logging()
        from mtl.predict_torch import TorchPredictor

        predictor = TorchPredictor.load(checkpoint)
        tasks = predictor.check_tasks(task)
        good = [i for i, text in enumerate(inputs) if text.strip()]
        records = predictor.predict([inputs[i] for i in good], tasks, batch_size)
        by_index = dict(zip(good, records))
        for i, text in enumerate(inputs):
            row = {"text": text, "predictions": by_index[i]} if i in by_index else {"text": text, "error": "empty text"}
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_inputs(file: Path, text_field: str) -> list[str]:
    from mtl.corpus import CSV_SUFFIXES, JSONL_SUFFIXES, read_examples

    if str(file) == "-":
        return sys.stdin.read().splitlines()
    if file.suffix.lower() in JSONL_SUFFIXES + CSV_SUFFIXES:
        return [e.text for e in read_examples(file, text_field, label_field=None)]
    if not file.is_file():
        raise DataError(f"{file}: file not found")
    try:
        return file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{file}: not valid UTF-8; save the file as UTF-8") from None


@app.command()
def quickstart(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the demo model goes.")] = Path("runs/quickstart"),
    epochs: Annotated[float, typer.Option(help="Passes over the demo data.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many optimizer steps (a smoke run).")] = -1,
) -> None:
    """Train both demo tasks (AG News topic, TweetEval sentiment) on the default backbone and evaluate."""
    with user_errors():
        config = TrainConfig(output_dir=str(output), epochs=epochs, max_steps=max_steps, encoder_lr=5e-5,
                             batch_size=16, grad_accumulation=2, logging_steps=10)
        task_files = demo_task_files()
        console.print(f"quickstart: {len(task_files)} demo tasks on {DEFAULT_BACKBONE}, output in {output}")
        _run_training(task_files, config, DEFAULT_BACKBONE, "cls", 128, "text", "label",
                      overwrite=True, resume=False)
        console.print(
            f"next: mtl-onnx predict {output} \"Stocks rallied after the central bank cut rates.\""
        )


if __name__ == "__main__":
    app()
