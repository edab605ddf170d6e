"""`mtl-onnx train`: the training options, checked, then the run with a live progress bar and the best checkpoint's
validation table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mtl.cli.options import (
    ClassWeighting,
    LabelField,
    Pooling,
    Sampling,
    TextField,
    TrainPrecision,
    TrustRemoteCode,
    console,
    setup_logging,
    shown,
    user_errors,
)
from mtl.config import DEFAULT_BACKBONE, TrainConfig
from mtl.data.files import TaskFiles
from mtl.errors import ConfigError

TaskOption = Annotated[
    list[str], typer.Option("--task", "-t", help="NAME=TRAIN_FILE[,VALIDATION_FILE]; repeat for each task.")
]
OutputOption = Annotated[Path, typer.Option("--output", "-o", help="Folder for the trained model.")]



def train(
    task: TaskOption,
    output: OutputOption = Path("runs/model"),
    backbone: Annotated[str, typer.Option(help="Hugging Face id or local folder of the encoder.")] = DEFAULT_BACKBONE,
    pooling: Annotated[Pooling, typer.Option(help="How token vectors become one sentence vector.")] = Pooling("cls"),
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
    unfreeze_top_layers: Annotated[Optional[int], typer.Option(
        help="Layers opened in epoch 1 (default: top quarter).")] = None,
    unfreeze_from_layer: Annotated[Optional[int], typer.Option(help="Or: first layer index opened in epoch 1.")] = None,
    sampling: Annotated[Sampling, typer.Option(help="How often each task is drawn.")] = Sampling("proportional"),
    temperature: Annotated[float, typer.Option(help="T for temperature sampling: p ∝ n^(1/T).")] = 2.0,
    mixed_batches: Annotated[bool, typer.Option("--mixed-batches/--single-task-batches")] = True,
    task_weight: Annotated[Optional[list[str]], typer.Option(
        metavar="NAME=W", help="Scale this task's loss by W >= 0 (others: 1); repeatable.")] = None,
    uncertainty_weighting: Annotated[bool, typer.Option(
        help="Learn each task's loss weight (Kendall et al. 2018); not with --task-weight.")] = False,
    class_weights: Annotated[ClassWeighting, typer.Option(
        help="balanced: weight each class n/(k*count) in its task's loss.")] = ClassWeighting("none"),
    group_by_length: Annotated[bool, typer.Option(help="Sort windows of drawn batches by length.")] = True,
    length_window: Annotated[int, typer.Option(help="Batches per length-grouping window.")] = 50,
    precision: Annotated[TrainPrecision, typer.Option(
        help="bf16: bfloat16 autocast (weights stay float32); auto: bf16 where the CPU or GPU has bf16 instructions."
    )] = TrainPrecision("auto"),
    seed: int = 42,
    text_field: TextField = "text",
    label_field: LabelField = "label",
    attn_implementation: Annotated[Optional[str], typer.Option(help="eager, sdpa, ... (DeBERTa-v2: eager).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --output.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a model already in --output.")] = False,
    trust_remote_code: TrustRemoteCode = False,
    data_cache: Annotated[Optional[Path], typer.Option(
        help="Folder of tokenized training data (Arrow), reused by later runs over the same files and tokenizer "
             "[default: $MTL_ONNX_CACHE, else ~/.cache/mtl-onnx].", show_default=False)] = None,
    num_proc: Annotated[int, typer.Option(min=1, help="Processes that tokenize the training data.")] = 1,
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
            sampling=sampling.value, temperature=temperature, mixed_batches=mixed_batches,
            task_weights=parse_task_weights(task_weight or ()), uncertainty_weighting=uncertainty_weighting,
            class_weights=class_weights.value,
            group_by_length=group_by_length, length_window=length_window, precision=precision.value,
            seed=seed,
        )
        task_files = [TaskFiles.parse(spec) for spec in task]
        run_training(task_files, config, backbone, pooling.value, max_length, text_field, label_field,
                      overwrite, resume, attn_implementation, trust_remote_code, data_cache, num_proc)


def parse_task_weights(specs: list[str]) -> dict[str, float]:
    """`--task-weight NAME=W` values as a dict; TrainConfig checks the numbers, training the names."""
    weights: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or not name or weight is None:
            raise ConfigError(f"bad --task-weight {spec!r}: expected NAME=WEIGHT (a task name and a number)")
        if name in weights:
            raise ConfigError(f"--task-weight {name} is given twice")
        weights[name] = weight
    return weights


def run_training(task_files, config, backbone, pooling, max_length, text_field, label_field, overwrite, resume,
                  attn_implementation=None, trust_remote_code=False, data_cache=None, num_proc=1):
    setup_logging()
    from mtl.cli.progress import RichProgressCallback
    from mtl.cli.tables import metrics_table
    from mtl.train.run import train

    callback = RichProgressCallback(console, tuple(t.name for t in task_files))
    result = train(
        task_files, config, backbone, pooling, max_length, text_field, label_field, overwrite, resume,
        attn_implementation, callbacks=[callback], trust_remote_code=trust_remote_code, data_cache=data_cache,
        num_proc=num_proc,
    )
    if not result.main_process:
        return result
    if result.metrics:
        console.print(metrics_table("validation, best checkpoint", result.metrics))
    console.print(
        f"trained on {result.examples_seen:,} sampled examples (of {result.dataset_examples:,}) in "
        f"{result.wall_seconds:.0f} s "
        f"({result.examples_per_second:.1f} examples/s); model saved in [bold]{shown(result.output)}[/bold]"
    )
    return result


