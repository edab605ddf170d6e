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
    check_input_files,
    console,
    in_panel,
    setup_logging,
    shown,
    user_errors,
)
from mtl.config import DEFAULT_BACKBONE, DataOptions, ModelOptions, TrainConfig
from mtl.data.files import TaskFiles
from mtl.errors import ConfigError
from mtl.extras import require_extra

# `train --help` lists its options under these headings, in this order.
MODEL, OPTIMISATION, FREEZING, SAMPLING, LOSS, DATA, OUTPUT = (
    "Model", "Optimisation", "Freezing", "Sampling and batching", "Loss", "Data", "Output")


def train(
    task: Annotated[list[str], typer.Option(
        "--task", "-t", metavar="NAME=TRAIN[,VALIDATION]", help="A task's name and its training (and validation) "
        "file; repeat for each task.", rich_help_panel=DATA)],
    text_field: in_panel(TextField, DATA) = "text",
    label_field: in_panel(LabelField, DATA) = "label",
    backbone: Annotated[str, typer.Option(
        help="Hugging Face id or local folder of the encoder.", rich_help_panel=MODEL)] = DEFAULT_BACKBONE,
    pooling: Annotated[Pooling, typer.Option(
        help="How token vectors become one sentence vector.", rich_help_panel=MODEL)] = Pooling("cls"),
    max_length: Annotated[int, typer.Option(min=2, help="Tokens kept per text.", rich_help_panel=MODEL)] = 128,
    attn_implementation: Annotated[Optional[str], typer.Option(
        help="The encoder's attention: eager, sdpa, ... (DeBERTa-v2: eager; default: the encoder's own).",
        rich_help_panel=MODEL)] = None,
    trust_remote_code: in_panel(TrustRemoteCode, MODEL) = False,
    epochs: Annotated[float, typer.Option(
        min=0.0, help="Passes over the sampled training data (fractions allowed).", rich_help_panel=OPTIMISATION)
    ] = 3.0,
    max_steps: Annotated[int, typer.Option(
        help="Stop after this many optimizer steps (overrides --epochs; -1: off).", rich_help_panel=OPTIMISATION)
    ] = -1,
    batch_size: Annotated[int, typer.Option(
        min=1, help="Examples per device per forward pass.", rich_help_panel=OPTIMISATION)] = 8,
    grad_accumulation: Annotated[int, typer.Option(
        min=1, help="Forward passes per optimizer step (effective batch: this x --batch-size x devices).",
        rich_help_panel=OPTIMISATION)] = 4,
    encoder_lr: Annotated[float, typer.Option(
        help="Learning rate of the encoder.", rich_help_panel=OPTIMISATION)] = 2e-5,
    head_lr_multiplier: Annotated[float, typer.Option(
        help="Heads learn this many times faster.", rich_help_panel=OPTIMISATION)] = 5.0,
    layer_lr_decay: Annotated[float, typer.Option(
        help="Per-layer LR factor below the top layer (1 = off).", rich_help_panel=OPTIMISATION)] = 1.0,
    weight_decay: Annotated[float, typer.Option(
        help="AdamW weight decay (not on biases and LayerNorm weights).", rich_help_panel=OPTIMISATION)] = 0.01,
    warmup_steps: Annotated[int, typer.Option(
        help="Linear warmup steps; clamped to 10% of the run's optimizer steps.", rich_help_panel=OPTIMISATION)
    ] = 500,
    warmup_ratio: Annotated[Optional[float], typer.Option(
        help="Warmup as a share of the run (replaces --warmup-steps).", rich_help_panel=OPTIMISATION)] = None,
    max_grad_norm: Annotated[float, typer.Option(
        help="Clip the gradient to this norm.", rich_help_panel=OPTIMISATION)] = 1.0,
    precision: Annotated[TrainPrecision, typer.Option(
        help="bf16: bfloat16 autocast (weights stay float32); auto: bf16 where the CPU or GPU has bf16 instructions.",
        rich_help_panel=OPTIMISATION)] = TrainPrecision("auto"),
    seed: Annotated[int, typer.Option(
        help="Random seed of the heads' initial weights, the task sampling and dropout.",
        rich_help_panel=OPTIMISATION)] = 42,
    freeze_backbone: Annotated[bool, typer.Option(help="Train the heads only.", rich_help_panel=FREEZING)] = False,
    freeze_head: Annotated[Optional[list[str]], typer.Option(
        help="Keep this task's head fixed; repeatable.", rich_help_panel=FREEZING)] = None,
    progressive_unfreezing: Annotated[bool, typer.Option(
        help="Epoch 0 heads, 1 + top layers, 2+ all.", rich_help_panel=FREEZING)] = False,
    unfreeze_top_layers: Annotated[Optional[int], typer.Option(
        help="Layers opened in epoch 1 (default: top quarter).", rich_help_panel=FREEZING)] = None,
    unfreeze_from_layer: Annotated[Optional[int], typer.Option(
        help="Or: first layer index opened in epoch 1.", rich_help_panel=FREEZING)] = None,
    sampling: Annotated[Sampling, typer.Option(
        help="How often each task is drawn.", rich_help_panel=SAMPLING)] = Sampling("proportional"),
    temperature: Annotated[float, typer.Option(
        help="T for temperature sampling: p ∝ n^(1/T).", rich_help_panel=SAMPLING)] = 2.0,
    mixed_batches: Annotated[bool, typer.Option(
        "--mixed-batches/--single-task-batches",
        help="A batch holds rows of several tasks, or of one task each.", rich_help_panel=SAMPLING)] = True,
    group_by_length: Annotated[bool, typer.Option(
        help="Sort windows of drawn batches by length.", rich_help_panel=SAMPLING)] = True,
    length_window: Annotated[int, typer.Option(
        help="Batches per length-grouping window.", rich_help_panel=SAMPLING)] = 50,
    task_weight: Annotated[Optional[list[str]], typer.Option(
        metavar="NAME=W", help="Scale this task's loss by W >= 0 (others: 1); repeatable.", rich_help_panel=LOSS)
    ] = None,
    uncertainty_weighting: Annotated[bool, typer.Option(
        help="Learn each task's loss weight (Kendall et al. 2018); not with --task-weight.", rich_help_panel=LOSS)
    ] = False,
    class_weights: Annotated[ClassWeighting, typer.Option(
        help="balanced: weight each class n/(k*count) in its task's loss.", rich_help_panel=LOSS)
    ] = ClassWeighting("none"),
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Folder for the trained model.", rich_help_panel=OUTPUT)] = Path("runs/model"),
    resume: Annotated[bool, typer.Option(
        help="Continue from the last checkpoint in --output.", rich_help_panel=OUTPUT)] = False,
    overwrite: Annotated[bool, typer.Option(
        help="Replace a model already in --output.", rich_help_panel=OUTPUT)] = False,
    data_cache: Annotated[Optional[Path], typer.Option(
        help="Folder of tokenized training data (Arrow), reused by later runs over the same files and tokenizer "
             "[default: $MTL_ONNX_CACHE, else ~/.cache/mtl-onnx].", show_default=False, rich_help_panel=DATA)] = None,
    num_proc: Annotated[int, typer.Option(
        min=1, help="Processes that tokenize the training data.", rich_help_panel=DATA)] = 1,
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
        check_input_files(path for files in task_files for path in (files.train, files.validation) if path)
        require_extra("train", "train")
        model = ModelOptions(backbone=backbone, pooling=pooling.value, max_length=max_length,
                             attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
        data = DataOptions(text_field=text_field, label_field=label_field, cache=data_cache, num_proc=num_proc)
        run_training(task_files, config, model, data, overwrite, resume)


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


def run_training(task_files: list[TaskFiles], config: TrainConfig, model: ModelOptions, data: DataOptions,
                 overwrite: bool, resume: bool):
    setup_logging()
    from mtl.cli.progress import RichProgressCallback
    from mtl.cli.tables import metrics_table, print_tables
    from mtl.train.run import train

    callback = RichProgressCallback(console, tuple(t.name for t in task_files))
    result = train(task_files, config, model, data, overwrite, resume, callbacks=[callback])
    if not result.main_process:
        return result
    if result.metrics:
        print_tables(metrics_table("validation, best checkpoint", result.metrics), console=console)
    console.print(
        f"trained on {result.examples_seen:,} sampled examples (of {result.dataset_examples:,}) in "
        f"{result.wall_seconds:.0f} s "
        f"({result.examples_per_second:.1f} examples/s); model saved in [bold]{shown(result.output)}[/bold]"
    )
    return result


