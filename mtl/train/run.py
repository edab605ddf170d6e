"""The train entry point behind the CLI: check every input before any work starts, train, then publish the
checkpoint folder so that it is either a complete model or untouched."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from mtl.artifacts.checkpoint import CHECKPOINTS_DIR, METRICS_FILE, TRAIN_CONFIG_FILE, is_checkpoint
from mtl.artifacts.encoder_config import position_limit
from mtl.artifacts.jsonfile import write_json
from mtl.artifacts.publish import staged
from mtl.config import ModelConfig, TaskSpec, TrainConfig
from mtl.data.files import Example, TaskFiles, check_labels, label_set, read_examples
from mtl.errors import ConfigError
from mtl.evaluate import mean_score

log = logging.getLogger(__name__)

@dataclass
class LoadedTask:
    files: TaskFiles
    spec: TaskSpec
    train: list[Example]
    validation: list[Example] | None


@dataclass
class TrainResult:
    output: Path
    metrics: dict[str, dict[str, float]]
    dataset_examples: int  # training examples across tasks
    examples_seen: int  # examples drawn by the sampler over the run (optimizer steps x effective batch)
    examples_per_second: float
    wall_seconds: float
    main_process: bool = True  # under torchrun, only the main process saves and reports


def load_tasks(task_files: list[TaskFiles], text_field: str = "text", label_field: str = "label") -> list[LoadedTask]:
    """Read and check every task's files; labels come from the training file, sorted."""
    names = [t.name for t in task_files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"duplicate task names: {', '.join(dupes)}; give each --task a different name")
    if not task_files:
        raise ConfigError("no tasks: give at least one --task NAME=TRAIN_FILE[,VALIDATION_FILE]")
    loaded = []
    for files in task_files:
        train = read_examples(files.train, text_field, label_field)
        spec = TaskSpec(files.name, label_set(train))
        validation = None
        if files.validation is not None:
            validation = read_examples(files.validation, text_field, label_field)
            check_labels(files.validation, validation, spec.labels)
        loaded.append(LoadedTask(files, spec, train, validation))
    return loaded


def check_output_dir(output: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a model or a folder that isn't ours; --resume needs something to resume."""
    checkpoints = output / CHECKPOINTS_DIR
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    if resume:
        if not has_checkpoints:
            raise ConfigError(f"{output}: nothing to resume (no {CHECKPOINTS_DIR}/checkpoint-* folder)")
        return
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: exists and is not a folder")
    if not output.is_dir() or not any(output.iterdir()):
        return
    ours = is_checkpoint(output) or checkpoints.is_dir()
    if not ours:
        raise ConfigError(f"{output}: folder is not empty and holds no mtl-onnx model; choose another --output")
    if not overwrite:
        what = "a model" if is_checkpoint(output) else "checkpoints of an unfinished run"
        raise ConfigError(f"{output}: already holds {what}; pass --overwrite to replace it or --resume to continue")
    shutil.rmtree(checkpoints, ignore_errors=True)


def train(
    task_files: list[TaskFiles],
    config: TrainConfig,
    backbone: str,
    pooling: str = "cls",
    max_length: int = 128,
    text_field: str = "text",
    label_field: str = "label",
    overwrite: bool = False,
    resume: bool = False,
    attn_implementation: str | None = None,
    callbacks: list = (),
) -> TrainResult:
    output = Path(config.output_dir)
    tasks = load_tasks(task_files, text_field, label_field)
    check_output_dir(output, overwrite, resume)
    # Heavy imports only once the inputs are known to be good.
    import transformers

    from mtl.data.dataset import MultitaskDataset, TaskExamples
    from mtl.model import MultitaskModel, encoder_input_names, load_backbone, load_tokenizer
    from mtl.train.trainer import best_validation_metrics, build_trainer

    transformers.set_seed(config.seed)
    encoder = load_backbone(backbone, attn_implementation)
    tokenizer = load_tokenizer(backbone)
    model_config = ModelConfig(
        tasks=tuple(t.spec for t in tasks), backbone=backbone, pooling=pooling,
        max_length=min(max_length, position_limit(encoder.config.to_dict())), input_names=encoder_input_names(encoder, tokenizer),
    )
    model = MultitaskModel(model_config, encoder)
    train_set = MultitaskDataset([TaskExamples(t.spec.name, t.train) for t in tasks], tokenizer, model_config)
    with_validation = [TaskExamples(t.spec.name, t.validation) for t in tasks if t.validation]
    eval_set = MultitaskDataset(with_validation, tokenizer, model_config) if with_validation else None

    trainer = build_trainer(model, tokenizer, train_set, eval_set, config, callbacks)
    started = time.perf_counter()
    outcome = trainer.train(resume_from_checkpoint=True if resume else None)
    wall = time.perf_counter() - started
    metrics = best_validation_metrics(trainer, model_config)
    if trainer.is_world_process_zero():
        save_model(model, tokenizer, output, config, metrics)
    seen = trainer.state.global_step * config.batch_size * config.grad_accumulation * trainer.args.world_size
    return TrainResult(output, metrics, len(train_set), seen, outcome.metrics.get("train_samples_per_second", 0.0), wall,
                       trainer.is_world_process_zero())


def save_model(model, tokenizer, output: Path, config: TrainConfig, metrics: dict) -> None:
    """Publish the model in `output`, keeping the run's checkpoints there (for --resume)."""
    with staged(output, carry=(CHECKPOINTS_DIR,)) as staging:
        model.save_pretrained(staging, tokenizer)
        write_json(staging / TRAIN_CONFIG_FILE, config.to_dict())
        write_json(staging / METRICS_FILE, {"validation": metrics, "score": mean_score(metrics) if metrics else None})
