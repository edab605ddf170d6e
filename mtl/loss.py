"""The loss of a mixed batch, a part of the model (`MultitaskModel.loss`): class weights inside each task's
cross-entropy, then fixed per-task weights or weights learned from each task's uncertainty (Kendall, Gal & Cipolla
2018). How a training run configures it is `mtl.train.losses`. Torch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MultitaskLoss(nn.Module):
    """The loss of a batch of B rows, each scored by its own task's head only.

    Each task t with rows in the batch contributes its cross-entropy summed over those rows, every row weighted by
    its class's weight c_t[y] (1 without class weights):

        S_t = sum over the task's rows i of c_t[y_i] * CE_i

    and is normalised by the batch size B, not by the sum of the class weights: a row's weight then does not depend
    on what else its batch holds (in mixed batches the weight sum of one task's rows swings from batch to batch),
    and balanced class weights average 1 over the training set, so the loss keeps its scale. Tasks absent from the
    batch contribute nothing. Then, with L_t = S_t / B:

        fixed weights (lambda_t, 1 by default):  loss = sum_t lambda_t * S_t / B    (all 1: the plain loss, exactly)
        learned weights (uncertainty):           loss = sum_t exp(-s_t) * L_t + s_t

    The learned form is the common implementation of Kendall et al.'s weighting, one learned log-variance
    s_t = log sigma_t^2 per task, starting at 0 (every weight 1), with gradient 1 - exp(-s_t) * L_t: each s_t settles
    where exp(s_t) = L_t, so each task's weight exp(-s_t) becomes 1 / L_t. Their classification term,
    (1 / sigma^2) * L + log sigma for a softmax whose logits are scaled by 1 / sigma^2, is exp(-s) * L + s / 2 in
    these terms; its optimum exp(s_t) = 2 L_t halves every task's weight alike, so the tasks' relative weights are
    the same. Only the tasks present in the batch add their s_t: an absent task has L_t = 0, and its regulariser
    alone would drive s_t down, inflating its weight.

    Fixed and learned task weights are exclusive (`TrainConfig` refuses both): at the optimum exp(-s_t) absorbs any
    fixed factor, so a fixed weight would have no lasting effect.
    """

    def __init__(self, task_weights: Sequence[float], class_weights: Sequence[Sequence[float] | None] = (),
                 uncertainty: bool = False):
        super().__init__()
        # Buffers follow the model to its device; not persistent: they are rebuilt from the run's config and data.
        self.register_buffer("task_weights", torch.tensor(task_weights, dtype=torch.float32), persistent=False)
        for index in range(len(task_weights)):
            weights = class_weights[index] if index < len(class_weights) else None
            tensor = None if weights is None else torch.tensor(weights, dtype=torch.float32)
            self.register_buffer(f"class_weights_{index}", tensor, persistent=False)
        # The learned log-variances are the one piece of training state here: a parameter, saved in the Trainer's
        # checkpoints (so --resume continues them) but not in the published model (`MultitaskModel.save_pretrained`).
        self.log_variance = nn.Parameter(torch.zeros(len(task_weights))) if uncertainty else None

    def class_weights(self, task: int) -> torch.Tensor | None:
        return getattr(self, f"class_weights_{task}")

    def forward(self, scored: Sequence[tuple[int, torch.Tensor, torch.Tensor]], batch_size: int) -> torch.Tensor:
        """`scored`: (task index, logits (rows, n_labels), labels (rows,)) for each task present in the batch."""
        sums = [(task, nn.functional.cross_entropy(logits, labels, weight=self.class_weights(task), reduction="sum"))
                for task, logits, labels in scored]
        total = sums[0][1].new_zeros(())
        if self.log_variance is None:
            for task, summed in sums:
                total = total + self.task_weights[task] * summed
            return total / batch_size
        for task, summed in sums:
            log_variance = self.log_variance[task]
            total = total + torch.exp(-log_variance) * (summed / batch_size) + log_variance
        return total
