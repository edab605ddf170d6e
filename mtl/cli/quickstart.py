"""`mtl-onnx quickstart`: the whole tool on the bundled demo data: train, export, bench."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from mtl.artifacts.jsonfile import read_json, write_json
from mtl.artifacts.publish import check_target, claimed
from mtl.cli.bench import run_quick_bench
from mtl.cli.export import run_export
from mtl.cli.options import console, shown, user_errors
from mtl.cli.train import run_training
from mtl.config import DataOptions, ModelOptions, TrainConfig
from mtl.data.files import demo_task_files
from mtl.errors import ConfigError
from mtl.extras import require_extra


def quickstart(
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Folder for the model, its export and the bench.")] = Path("runs/quickstart"),
    epochs: Annotated[float, typer.Option(help="Passes over the demo data.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many optimizer steps (a smoke run).")] = -1,
    export: Annotated[bool, typer.Option(help="Export fp32 and int8 ONNX, validated on the demo data.")] = True,
    bench: Annotated[bool, typer.Option(help="Benchmark PyTorch against the export (needs --export).")] = True,
) -> None:
    """The whole tool on bundled demo data: train both demo tasks (AG News topic, TweetEval sentiment) on the
    default backbone, export fp32 and int8 ONNX with validation, and benchmark PyTorch against ONNX Runtime."""
    with user_errors():
        model_dir, onnx_dir = output / "model", output / "onnx"
        # Every option and the folder are checked before anything is made: a refused quickstart leaves nothing.
        config = TrainConfig(output_dir=str(model_dir), epochs=epochs, max_steps=max_steps, encoder_lr=5e-5,
                             batch_size=16, grad_accumulation=2, logging_steps=10)
        task_files = demo_task_files()
        check_target(output, "quickstart folder", _is_quickstart, overwrite=True, error=ConfigError,
                     renamed=False)  # filled where it is: its parts are published inside it
        require_extra("train", "quickstart")
        bench_device = announce_device()
        undo = _UndoOnFailure(output)  # taken before the claim, which makes the folder it sits in
        with claimed(output):
            with undo:
                _claim(output)
                model = ModelOptions()  # the default backbone, pooling and length
                console.rule(f"1/3 train: {len(task_files)} demo tasks on {model.backbone}")
                run_training(task_files, config, model, DataOptions(), overwrite=True, resume=False)
            if export:
                from mtl.export.options import ExportOptions

                precisions = ("fp32", "int8", "fp16") if bench_device == "cuda" else ("fp32", "int8")
                console.rule(f"2/3 export: {', '.join(precisions)}, validated against PyTorch and on the demo "
                             f"validation data")
                # Checked on the demo validation files the checkpoint records. int8 is kept even past the limits so
                # the demo always shows it; then its status is "forced" and the table says what it cost.
                run_export(model_dir, onnx_dir, ExportOptions(precisions=precisions, force_int8=True,
                                                              overwrite=True))
            if export and bench:
                console.rule(f"3/3 bench: PyTorch against ONNX Runtime on this machine ({bench_device})")
                run_quick_bench(model_dir, onnx_dir, output, bench_device)
            console.rule("done")
            console.print(f"checkpoint: [bold]{shown(model_dir)}[/bold]")
            if export:
                console.print(
                    f"ONNX export: [bold]{shown(onnx_dir)}[/bold] (runs with onnxruntime + tokenizers only)")
                console.print(f"next: mtl-onnx predict {shown(onnx_dir)} \"Stocks rallied after the rate cut.\"")


def announce_device() -> str:
    """Where the quickstart runs, said in one line: on the GPU when PyTorch sees one (the Trainer then trains
    there), and the bench too where ONNX Runtime has a CUDA provider; else on the CPU. Returns the bench's device."""
    import torch

    from mtl.runtime.cuda import has_cuda_provider

    if not torch.cuda.is_available():
        console.print("running on CPU: PyTorch sees no CUDA GPU here (with Docker, pass --gpus all to use one)",
                      highlight=False, soft_wrap=True)
        return "cpu"
    gpu = shown(torch.cuda.get_device_name(0))
    if not has_cuda_provider():
        console.print(f"running on GPU ({gpu}) for training; the bench runs on CPU: ONNX Runtime here has no CUDA "
                      f"provider (pip install 'mtl-onnx\\[gpu]')", highlight=False, soft_wrap=True)
        return "cpu"
    console.print(f"running on GPU ({gpu}): training, fp16 export and the bench", highlight=False, soft_wrap=True)
    return "cuda"


QUICKSTART_MARKER = "quickstart.json"
QUICKSTART_FORMAT = "mtl-onnx/quickstart"


def _is_quickstart(folder: Path) -> bool:
    try:
        return read_json(folder / QUICKSTART_MARKER).get("format") == QUICKSTART_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _claim(output: Path) -> None:
    """Make `output` the quickstart's folder (checked by `check_target` first): a new or empty one, or an earlier
    quickstart's (its marker file says so), whose model, export and report are each replaced only once their new
    version is complete."""
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / QUICKSTART_MARKER, {"format": QUICKSTART_FORMAT, "parts": ["model", "onnx", "bench.json",
                                                                                   "bench.md"]})


class _UndoOnFailure:
    """Until the block ends (the model trained), a failure (a missing backbone, Ctrl-C) takes back what this run
    made: the folders it created, or what it put in a folder that was empty. An earlier quickstart's folder keeps
    its parts: training replaces its model only once the new one is complete. What was there is noted at once,
    before anything (the claim's lock file included) is made."""

    def __init__(self, output: Path):
        self.output = output
        self.created = output.absolute()
        while not self.created.parent.exists():
            self.created = self.created.parent
        self.made = not self.created.exists()
        self.was_empty = output.is_dir() and not any(output.iterdir())

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            return
        if self.made:
            shutil.rmtree(self.created, ignore_errors=True)
        elif self.was_empty:
            for entry in self.output.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
