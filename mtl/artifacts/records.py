"""The prediction record: what `predict` writes for each text, made from logits alike by the PyTorch predictor and the
ONNX runtime (no torch)."""

from __future__ import annotations

import numpy as np

from mtl.errors import BrokenModelError


def prediction_records(
    logits_by_task: dict[str, np.ndarray], labels_by_task: dict[str, tuple[str, ...]]
) -> list[dict[str, dict]]:
    """One record per text: {task: {"label", "score", "probabilities": {label: p}}}. Non-finite logits are a
    broken model, not a prediction: they would print as NaN, which is not JSON."""
    for task, logits in logits_by_task.items():
        if not np.all(np.isfinite(logits)):
            raise BrokenModelError(f"the model computes NaN or infinite logits for task {task!r}: its weights are "
                                   f"broken (did the training loss go NaN?); retrain it")
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
