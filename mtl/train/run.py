"""The train entry point behind the CLI: check every input before any work starts, train, then publish the
checkpoint folder so that it is either a complete model or untouched."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from mtl.artifacts.checkpoint import (
    CHECKPOINTS_DIR,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    RUN_CONFIG_FILE,
    TRAIN_CONFIG_FILE,
    write_data_record,
    write_library_versions,
)
from mtl.artifacts.encoder_config import position_limit
from mtl.artifacts.jsonfile import read_json, write_json
from mtl.artifacts.publish import OWNER_FILE, new_staging, publish, staging_owner
from mtl.config import DataOptions, ModelConfig, ModelOptions, TaskSpec, TrainConfig
from mtl.data.files import TaskFiles, label_set
from mtl.data.tokenized import RowsEntry, TokenCache, Tokenization, default_cache
from mtl.errors import CheckpointError, ConfigError
from mtl.evaluate import mean_score
from mtl.train.folders import (
    check_output_dir,
    checkpoints,
    drop_incomplete,
    is_complete,
    resume_point,
    run_folder,
    saving,
    settle_output,
)

log = logging.getLogger(__name__)

@dataclass
class LoadedTask:
    files: TaskFiles
    spec: TaskSpec
    train: RowsEntry
    validation: RowsEntry | None


@dataclass
class TrainResult:
    output: Path
    metrics: dict[str, dict[str, float]]
    dataset_examples: int  # training examples across tasks
    examples_seen: int  # examples drawn by the sampler over the run (optimizer steps x effective batch)
    examples_per_second: float
    wall_seconds: float
    main_process: bool = True  # under torchrun, only the main process saves and reports


def load_tasks(task_files: list[TaskFiles], cache: TokenCache, text_field: str = "text",
               label_field: str = "label") -> list[LoadedTask]:
    """Read and check every task's files into the cache's Arrow rows (or find them there); labels come from the
    training file, sorted."""
    names = [t.name for t in task_files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"duplicate task names: {', '.join(dupes)}; give each --task a different name")
    if not task_files:
        raise ConfigError("no tasks: give at least one --task NAME=TRAIN_FILE[,VALIDATION_FILE]")
    loaded = []
    for files in task_files:
        train = cache.rows(files.train, text_field, label_field, description=f"{files.name} training file")
        spec = TaskSpec(files.name, label_set(train.first_lines))
        validation = None
        if files.validation is not None:
            validation = cache.rows(files.validation, text_field, label_field, known=spec.labels,
                                    description=f"{files.name} validation file")
        loaded.append(LoadedTask(files, spec, train, validation))
    return loaded


def check_resumable(checkpoint: Path, model_config: ModelConfig, config: TrainConfig) -> None:
    """A resumed run must train the same model: tasks, labels, backbone and input shape of the run it continues;
    and it learns the same parameters, so uncertainty weighting must be on or off as it was in that run."""
    run = checkpoint.parent.parent
    saved_path = run / RUN_CONFIG_FILE
    if not saved_path.is_file():
        saved_path = run / MODEL_CONFIG_FILE
    try:
        data = read_json(saved_path)
        saved = ModelConfig.from_dict(data.get("model", data))
        saved_train = data["train"] if "train" in data else read_json(run / TRAIN_CONFIG_FILE)
        learned = bool(saved_train.get("uncertainty_weighting", False))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{saved_path}: cannot read the configuration of the run to resume ({err})") from None
    if learned != config.uncertainty_weighting:
        # Its checkpoints hold learned task weights and their optimizer state, or lack them: they cannot load.
        raise ConfigError(f"--resume continues a run trained {'with' if learned else 'without'} "
                          f"--uncertainty-weighting; give the same, or train into a new --output instead")
    for field in ("tasks", "backbone", "pooling", "max_length", "input_names"):
        if getattr(saved, field) != getattr(model_config, field):
            raise ConfigError(f"--resume continues a run with different {field} ({getattr(saved, field)!r}, now "
                              f"{getattr(model_config, field)!r}); train into a new --output instead")


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # torchrun's global rank; a plain run is rank 0


def train(
    task_files: list[TaskFiles],
    config: TrainConfig,
    model_options: ModelOptions = ModelOptions(),
    data: DataOptions = DataOptions(),
    overwrite: bool = False,
    resume: bool = False,
    callbacks: list = (),
) -> TrainResult:
    """Train and publish."""
    output = settle_output(Path(config.output_dir))  # a path that cannot be the model's fails before any work
    cache = TokenCache(data.cache or default_cache(), data.num_proc)
    try:
        return _train(task_files, config, model_options, data, overwrite, resume, callbacks, output, cache)
    finally:
        cache.close()


def _train(task_files: list[TaskFiles], config: TrainConfig, model_options: ModelOptions, data: DataOptions,
           overwrite: bool, resume: bool, callbacks: list, output: Path, cache: TokenCache) -> TrainResult:
    backbone = model_options.backbone
    tasks = load_tasks(task_files, cache, data.text_field, data.label_field)
    names = [t.spec.name for t in tasks]
    unknown = [name for name in config.freeze_heads if name not in names]
    if unknown:
        raise ConfigError(f"cannot freeze unknown head(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    config.task_weight_list(names)  # unknown tasks, every weight 0: refused before anything is written
    inputs = [path for files in task_files for path in (files.train, files.validation)]
    check_output_dir(output, overwrite, resume, [*inputs, backbone if Path(backbone).exists() else None])
    start_from = resume_point(output) if resume else None
    # Heavy imports only once the inputs are known to be good.
    import transformers

    from mtl.data.dataset import MultitaskDataset
    from mtl.loading import tokenizer_problems
    from mtl.model import MultitaskModel, encoder_input_names, load_backbone, load_tokenizer
    from mtl.train.losses import training_loss
    from mtl.train.resume import check_resume_state
    from mtl.train.trainer import best_validation_metrics, build_trainer

    transformers.set_seed(config.seed)
    encoder = load_backbone(backbone, model_options.attn_implementation, model_options.trust_remote_code)
    tokenizer = load_tokenizer(backbone, model_options.trust_remote_code)
    unfit = tokenizer_problems(tokenizer, encoder.get_input_embeddings().num_embeddings)
    if unfit:
        raise CheckpointError(f"backbone {backbone!r}: its tokenizer does not fit its encoder: {'; '.join(unfit)}")
    model_config = model_options.model_config(
        [t.spec for t in tasks], encoder_input_names(encoder, tokenizer),
        _clamped_length(model_options.max_length, encoder.config.to_dict(), backbone))
    if start_from is not None:
        check_resumable(start_from, model_config, config)
    model = MultitaskModel(model_config, encoder)
    tokenization = Tokenization(tokenizer, model_config.max_length, model_config.input_names)
    train_set = MultitaskDataset(
        [cache.tokens(t.train, t.spec.labels, tokenization, f"{t.spec.name} training file") for t in tasks],
        list(range(len(tasks))))
    if start_from is not None:  # before the run folder is opened: the error names the user's own file
        check_resume_state(start_from, model, training_loss(config, model_config, train_set), config,
                           run_folder(output) / CHECKPOINTS_DIR)
    validated = [(index, t) for index, t in enumerate(tasks) if t.validation is not None]
    eval_set = MultitaskDataset(
        [cache.tokens(t.validation, t.spec.labels, tokenization, f"{t.spec.name} validation file")
         for _, t in validated], [index for index, _ in validated]) if validated else None

    folder = _open_run_folder(output, resume) if _main_process() else run_folder(output)
    if _main_process():
        write_json(folder / RUN_CONFIG_FILE, {"model": model_config.to_dict(), "train": config.to_dict()})
    try:
        if start_from is not None:
            drop_incomplete(folder / CHECKPOINTS_DIR)  # a save cut short: never resumed from, never kept
            start_from = resume_point(output)  # now the run folder's own copy
        trainer = build_trainer(model, tokenizer, train_set, eval_set, config, callbacks, folder / CHECKPOINTS_DIR)
        started = time.perf_counter()
        outcome = trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
        wall = time.perf_counter() - started
        metrics = best_validation_metrics(trainer, model_config)
        if trainer.is_world_process_zero():
            with saving(folder, partial_ok=True):
                save_model(model, tokenizer, folder, config, metrics)
            read = [entry for t in tasks for entry in (t.train, t.validation) if entry and entry.digest]
            write_data_record(folder, {t.spec.name: {"train": t.files.train, "validation": t.files.validation}
                                       for t in tasks}, data.text_field, data.label_field,
                              {entry.source: entry.digest for entry in read})
            publish(folder, output)
    except BaseException:
        if _main_process():
            _abandon(folder, output)
        raise
    seen = trainer.state.global_step * config.batch_size * config.grad_accumulation * trainer.args.world_size
    speed = outcome.metrics.get("train_samples_per_second", 0.0)
    return TrainResult(output, metrics, len(train_set), seen, speed, wall, trainer.is_world_process_zero())


def _clamped_length(max_length: int, encoder_config: dict, backbone: str) -> int:
    limit = position_limit(encoder_config)
    if max_length > limit:
        log.warning("--max-length %d is more than %s takes; using its limit of %d tokens", max_length, backbone, limit)
    return min(max_length, limit)


def _open_run_folder(output: Path, resume: bool) -> Path:
    """The run folder, this process's own: a killed run's is reused by --resume and replaced otherwise; a live
    run's is never touched."""
    folder = run_folder(output)
    owner = staging_owner(folder)
    if owner is not None and owner != os.getpid():
        raise ConfigError(f"{output}: another training run (process {owner}) is writing it; wait for it or stop it")
    if resume and folder.is_dir():
        (folder / OWNER_FILE).write_text(str(os.getpid()), encoding="ascii")
        return folder
    folder = new_staging(output, name=folder.name)
    if resume:
        # Continuing a published model: its checkpoints record paths inside the run folder they were made in
        # (the best one among them), so they go back there, as hard links: cheap, and the model stays as it is.
        shutil.copytree(output / CHECKPOINTS_DIR, folder / CHECKPOINTS_DIR, copy_function=_link_or_copy)
    return folder


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def _abandon(folder: Path, output: Path) -> None:
    """After a failed or interrupted run: keep its folder only if it holds checkpoints to resume from."""
    if any(is_complete(path) for path in checkpoints(folder / CHECKPOINTS_DIR)):
        (folder / OWNER_FILE).unlink(missing_ok=True)
        log.warning("the run's checkpoints are kept in %s: train again with --resume to continue", folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def save_model(model, tokenizer, folder: Path, config: TrainConfig, metrics: dict) -> None:
    """The model's files, beside the run's checkpoints, in the run folder about to be published."""
    model.save_pretrained(folder, tokenizer)
    write_json(folder / TRAIN_CONFIG_FILE, config.to_dict())
    record = {"validation": metrics, "score": mean_score(metrics) if metrics else None}
    if model.loss.log_variance is not None:
        # The learned task weights are exp(-s); the published model itself does not keep them.
        record["log_variances"] = dict(zip(model.model_config.task_names, model.loss.log_variance.tolist()))
    write_json(folder / METRICS_FILE, record)
    write_library_versions(folder)
    (folder / RUN_CONFIG_FILE).unlink(missing_ok=True)  # the published model has config.json + train_config.json
