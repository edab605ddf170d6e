"""The prediction record: what `predict` writes for each text, made from logits alike by the PyTorch predictor and the
ONNX runtime (no torch)."""

from __future__ import annotations

import numpy as np


def prediction_records(
    logits_by_task: dict[str, np.ndarray], labels_by_task: dict[str, tuple[str, ...]]
) -> list[dict[str, dict]]:
    """One record per text: {task: {"label", "score", "probabilities": {label: p}}}."""
    probabilities = {task: softmax(np.asarray(logits, dtype=np.float64)) for task, logits in logits_by_task.items()}
    count = len(next(iter(probabilities.values()))) if probabilities else 0
    records = []
    for row in range(count):
        record = {}
        for task, probs in probabilities.items():
            labels = labels_by_task[task]
            best = int(np.argmax(probs[row]))
            record[task] = {
                "label": labels[best],
                "score": round(float(probs[row][best]), 6),
                "probabilities": {label: round(float(p), 6) for label, p in zip(labels, probs[row])},
            }
        records.append(record)
    return records


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
