"""Classification metrics in plain numpy, and evaluating any predictor on labelled files (no torch: the PyTorch
predictor and the ONNX runtime's `Predictor` both meet the `LogitsPredictor` protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from mtl.config import ModelConfig
from mtl.data.files import read_examples

METRIC_NAMES = ("accuracy", "macro_f1", "macro_recall")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and macro-recall over the classes present in truth or prediction
    (the convention scikit-learn uses, so the figures compare with published ones)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"need two 1-d arrays of one length, got {y_true.shape} and {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("no examples to score")
    classes = np.union1d(y_true, y_pred)
    recalls, f1s = [], []
    for cls in classes:
        tp = np.sum((y_pred == cls) & (y_true == cls))
        actual = np.sum(y_true == cls)
        predicted = np.sum(y_pred == cls)
        recall = tp / actual if actual else 0.0
        precision = tp / predicted if predicted else 0.0
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(np.mean(f1s)),
        "macro_recall": float(np.mean(recalls)),
    }


def mean_score(per_task: dict[str, dict[str, float]]) -> float:
    """The single number the best checkpoint is chosen by: the mean of every task's three metrics."""
    values = [m[name] for m in per_task.values() for name in METRIC_NAMES]
    return float(np.mean(values))


def flat_metrics(per_task: dict[str, dict[str, float]]) -> dict[str, float]:
    """{task: {metric: v}} -> {"<task>_<metric>": v}: the flat form the Trainer logs (with its "eval_" prefix)."""
    return {f"{task}_{metric}": value for task, values in per_task.items() for metric, value in values.items()}


def per_task_metrics(flat: dict[str, float], task_names, prefix: str = "eval_") -> dict[str, dict[str, float]]:
    """The inverse of `flat_metrics` for the given tasks: {task: {metric: value}}, tasks without figures left out."""
    return {
        task: {m: flat[f"{prefix}{task}_{m}"] for m in METRIC_NAMES}
        for task in task_names
        if f"{prefix}{task}_accuracy" in flat
    }


class LogitsPredictor(Protocol):
    """What evaluation needs of a predictor: its tasks and labels, and each requested task's logits in input order."""

    config: ModelConfig

    def logits(self, texts: list[str], tasks: list[str] | None = None,
               batch_size: int | None = None) -> dict[str, np.ndarray]: ...


def evaluate_files(predictor: LogitsPredictor, task_files: dict[str, Path], text_field: str = "text",
                   label_field: str = "label", batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Per-task accuracy, macro-F1 and macro-recall of a predictor on each task's labelled file."""
    results = {}
    for task, path in task_files.items():
        spec = predictor.config.task(task)
        examples = read_examples(path, text_field, label_field, labels=spec.labels)
        logits = predictor.logits([e.text for e in examples], [task], batch_size)[task]
        truth = [spec.labels.index(e.label) for e in examples]
        results[task] = classification_metrics(truth, logits.argmax(axis=-1))
    return results
