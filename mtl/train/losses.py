"""The loss a training run asks for (`mtl.loss.MultitaskLoss` with the run's task weights, class weights counted
on its training set, or learned uncertainty weights)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mtl.config import ModelConfig, TaskSpec, TrainConfig
from mtl.errors import ConfigError
from mtl.loss import MultitaskLoss

if TYPE_CHECKING:
    from mtl.data.dataset import MultitaskDataset


def balanced_class_weights(spec: TaskSpec, labels: Sequence[int]) -> list[float]:
    """scikit-learn's "balanced" weights from a task's training labels: n_samples / (n_classes * count_c), so every
    class weighs the same in total and the weights average 1 over the training rows. A class without training rows
    would need an infinite weight: refused (labels come from the training file, so this only guards other callers)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(spec.labels))
    missing = [label for label, count in zip(spec.labels, counts) if count == 0]
    if missing:
        raise ConfigError(f"balanced class weights for task {spec.name!r}: no training example of "
                          f"{', '.join(map(repr, missing))}, so its weight would be infinite")
    return [len(labels) / (len(spec.labels) * int(count)) for count in counts]


def training_loss(config: TrainConfig, model_config: ModelConfig, train_set: MultitaskDataset) -> MultitaskLoss:
    """The loss the run's options ask for, its class weights counted on the training set."""
    class_weights: list[list[float]] = []
    if config.class_weights == "balanced":
        labels = {task: train_set.labels_of(part) for part, task in enumerate(train_set.task_ids)}
        class_weights = [balanced_class_weights(spec, labels[task]) for task, spec in enumerate(model_config.tasks)]
    return MultitaskLoss(config.task_weight_list(model_config.task_names), class_weights,
                         config.uncertainty_weighting)
