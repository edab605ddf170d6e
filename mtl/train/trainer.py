"""Training on the Hugging Face `Trainer`: parameter groups, progressive unfreezing, task sampling,
per-task metrics and the best checkpoint by their mean. Runs unchanged under `torchrun` (DDP)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import get_parameter_names
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from mtl.artifacts.checkpoint import CHECKPOINTS_DIR
from mtl.artifacts.environment import cpu_flags
from mtl.config import ModelConfig, TrainConfig
from mtl.data.dataset import MultitaskDataset, PaddingCollator, TaskBatchSampler, task_probabilities
from mtl.errors import ConfigError, TrainingDivergedError
from mtl.evaluate import classification_metrics, flat_metrics, mean_score, per_task_metrics
from mtl.model import MultitaskModel, encoder_layer_of
from mtl.train.folders import saving
from mtl.train.losses import training_loss

log = logging.getLogger(__name__)

def parameter_groups(model: MultitaskModel, config: TrainConfig) -> list[dict]:
    """Optimizer groups over *every* parameter, frozen ones included.

    Heads train at `head_lr`; encoder parameters at `encoder_lr`, scaled by `layer_lr_decay` per layer
    below the top. Biases and LayerNorm weights get no weight decay. Frozen parameters stay in the
    optimizer so unfreezing later needs no rebuild (HF's own `create_optimizer` would drop them); with
    no gradient AdamW skips them entirely, so they neither move nor decay. The loss's learned
    log-variances (uncertainty weighting) get a group of their own, "loss:no_decay", at `head_lr`.
    """
    decay_names = set(get_parameter_names(model, [torch.nn.LayerNorm]))
    num_layers = model.encoder.num_layers
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if name.startswith("loss."):
            key, lr = "loss", config.head_lr
        elif name.startswith("heads."):
            key, lr = f"head:{name.split('.')[1]}", config.head_lr
        else:
            depth = encoder_layer_of(name, num_layers)
            key = f"encoder:{depth}"
            lr = config.encoder_lr * config.layer_lr_decay ** max(0, num_layers - 1 - depth)
        # Decay would pull the log-variances to 0, i.e. back to equal task weights.
        decays = (name in decay_names and not name.endswith("bias") and "norm" not in name.lower()
                  and key != "loss")
        key += ":decay" if decays else ":no_decay"
        group = groups.setdefault(
            key, {"name": key, "params": [], "lr": lr, "weight_decay": config.weight_decay if decays else 0.0}
        )
        group["params"].append(param)
    return list(groups.values())


class ProgressiveUnfreezing(TrainerCallback):
    """Epoch 0: heads only; epoch 1: also the top encoder layers; epoch 2 on: everything.

    Works by `requires_grad`, set at the start of each epoch. The model starts fully trainable so that
    DDP, which wraps it before the first epoch, registers every parameter it may ever train.
    Parameters the user froze stay frozen in every phase.
    """

    def __init__(self, model: MultitaskModel, config: TrainConfig):
        self.first_open_layer = config.first_unfrozen_layer(model.encoder.num_layers)
        self.num_layers = model.encoder.num_layers
        self.scheduled = [
            (name, param) for name, param in model.encoder.named_parameters() if param.requires_grad
        ]
        self.phase: int | None = None

    def phase_for_epoch(self, epoch: int) -> int:
        return min(epoch, 2)

    def apply(self, model: MultitaskModel, phase: int) -> None:
        for name, param in self.scheduled:
            depth = encoder_layer_of(name, self.num_layers)
            param.requires_grad = phase >= 2 or (phase == 1 and depth >= self.first_open_layer)
        if phase != self.phase:
            log.info(
                "unfreezing phase %d (%s): %s trainable parameters",
                phase,
                ("heads only", f"heads + encoder layers >= {self.first_open_layer}", "everything")[phase],
                f"{model.num_trainable_parameters():,}",
            )
        self.phase = phase

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        self.apply(model, self.phase_for_epoch(int(state.epoch or 0)))


class MultitaskTrainer(Trainer):
    """`Trainer` with our parameter groups, task-sampled batches and a clamped warmup."""

    def __init__(self, *args, train_config: TrainConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_config = train_config

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss):
            # A NaN loss makes every later weight NaN: stop now, before a broken model is saved as a good one.
            raise TrainingDivergedError(
                f"the training loss became {loss.item()} at step {self.state.global_step + 1}: the run diverged "
                f"(usually a learning rate far too high); nothing was saved")
        return loss

    def _save_checkpoint(self, model, trial):
        # A save that a full disk stops is one line, and its half-written folder goes: --resume must only ever
        # find complete checkpoints (the Trainer itself would leave it, and count it among those it keeps).
        folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        with saving(folder):
            super()._save_checkpoint(model, trial)

    def create_optimizer(self, model=None):
        # transformers 5 passes the prepared model when it delays the optimizer (FSDP, not used here); 4.57 never does.
        if self.optimizer is None:
            target = self.model if model is None else model
            self.optimizer = torch.optim.AdamW(parameter_groups(target, self.train_config))
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # Whole steps, never a ratio: warmup_ratio is left at 4.57's default 0 (transformers 5 has no such field, and
        # reads a warmup_steps below 1 as a ratio; warmup_for's whole number is either 0 or a count of steps).
        self.args.warmup_steps = self.train_config.warmup_for(num_training_steps)
        return super().create_scheduler(num_training_steps, optimizer)

    def get_train_dataloader(self) -> DataLoader:
        dataset: MultitaskDataset = self.train_dataset
        config = self.train_config
        sampler = TaskBatchSampler(
            dataset.task_sizes,
            self._train_batch_size,
            task_probabilities(dataset.task_sizes, config.sampling, config.temperature),
            mixed=config.mixed_batches,
            seed=config.seed,
            lengths=dataset.lengths if config.group_by_length else None,
            window=config.length_window,
        )
        loader = DataLoader(
            dataset, batch_sampler=sampler, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )
        return self.accelerator.prepare(loader)


def metrics_function(config: ModelConfig):
    """compute_metrics for the Trainer: split the mixed validation set by task id, score each task."""

    def compute(eval_pred) -> dict[str, float]:
        logits_per_task = eval_pred.predictions
        labels, task_ids = eval_pred.label_ids
        per_task = {}
        for index, name in enumerate(config.task_names):
            rows = task_ids == index
            if rows.any():
                predicted = np.argmax(logits_per_task[index][rows], axis=-1)
                per_task[name] = classification_metrics(labels[rows], predicted)
        flat = flat_metrics(per_task)
        flat["score"] = mean_score(per_task)
        return flat

    return compute


# CPU flags of native bf16 arithmetic (AVX512-BF16 on AMD Zen 4 and Intel since Cooper Lake, AMX on Sapphire Rapids).
# Without them PyTorch emulates bf16 matmuls and autocast only adds conversions.
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def uses_bf16(precision: str) -> bool:
    """Whether to autocast to bf16: when asked for, or with "auto" on a GPU or CPU that computes in bf16 natively."""
    if precision != "auto":
        return precision == "bf16"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(NATIVE_BF16_FLAGS & cpu_flags())


def training_arguments(config: TrainConfig, has_validation: bool, checkpoints_dir: Path) -> TrainingArguments:
    strategy = "epoch" if has_validation else "no"
    bf16 = uses_bf16(config.precision)
    # TrainingArguments hands its precision to accelerate through this variable, and leaves an earlier value in place
    # when bf16 is off: a second run in one process (or a stray accelerate config) would autocast against our choice.
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if bf16 else "no"
    return TrainingArguments(
        output_dir=str(checkpoints_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.grad_accumulation,
        learning_rate=config.encoder_lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        lr_scheduler_type="linear",
        eval_strategy=strategy,
        save_strategy="epoch",
        load_best_model_at_end=has_validation,
        metric_for_best_model="score" if has_validation else None,
        greater_is_better=True,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        seed=config.seed,
        bf16=bf16,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=["labels", "task_ids"],
        # Mixed batches can miss a task, and phases freeze parameters: both leave parameters without
        # gradients, which DDP only tolerates when told to look for them.
        ddp_find_unused_parameters=True,
        dataloader_num_workers=config.dataloader_workers,
        dataloader_pin_memory=False,
        # Checkpoints are safetensors: 4.57's default, transformers 5's only format (it has no save_safetensors).
        # Without CUDA, only an explicit CPU flag makes accelerate set up multi-CPU (gloo) DDP under torchrun;
        # otherwise every process believes it is the only one (rank 0, no sharding, no gradient sync).
        use_cpu=not torch.cuda.is_available(),
    )


def build_trainer(
    model: MultitaskModel,
    tokenizer,
    train_set: MultitaskDataset,
    eval_set: MultitaskDataset | None,
    config: TrainConfig,
    callbacks: list[TrainerCallback] = (),
    checkpoints_dir: Path | None = None,
) -> MultitaskTrainer:
    """The Trainer for one run; its per-epoch checkpoints go to `checkpoints_dir` (default: the output's)."""
    model.freeze(backbone=config.freeze_backbone, heads=config.freeze_heads)
    if model.num_trainable_parameters() == 0:
        raise ConfigError("every parameter is frozen, so there is nothing to train; unfreeze the backbone or a head")
    # Before the Trainer: it moves the model, the loss's buffers with it, and DDP must see the learned weights.
    model.loss = training_loss(config, model.model_config, train_set)
    all_callbacks = list(callbacks)
    if config.progressive_unfreezing:
        all_callbacks.insert(0, ProgressiveUnfreezing(model, config))
    checkpoints_dir = checkpoints_dir or Path(config.output_dir) / CHECKPOINTS_DIR
    args = training_arguments(config, eval_set is not None, checkpoints_dir)
    log.info("training in %s (precision %s)", "bf16 autocast" if args.bf16 else "fp32", config.precision)
    log.info("%s of %s parameters trainable", f"{model.num_trainable_parameters():,}",
             f"{sum(p.numel() for p in model.parameters()):,}")
    trainer = MultitaskTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=PaddingCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        compute_metrics=metrics_function(model.model_config) if eval_set is not None else None,
        callbacks=all_callbacks,
        train_config=config,
    )
    trainer.remove_callback(PrinterCallback)  # the library logs; only the CLI prints
    return trainer


def best_validation_metrics(trainer: Trainer, config: ModelConfig) -> dict[str, dict]:
    """Per-task metrics of the best evaluation (the model `load_best_model_at_end` restored)."""
    evaluations = [entry for entry in trainer.state.log_history if "eval_score" in entry]
    if not evaluations:
        return {}
    return per_task_metrics(max(evaluations, key=lambda entry: entry["eval_score"]), config.task_names)
