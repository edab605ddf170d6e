"""Classification metrics in plain numpy, shared by training, evaluation and the runtime (no torch)."""

from __future__ import annotations

import numpy as np

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


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
