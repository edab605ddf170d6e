"""Turning logits into per-text prediction records; shared by the PyTorch path and the ONNX runtime (no torch)."""

from __future__ import annotations

import numpy as np

from mtl.metrics import softmax


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


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small.
    Callers put results back in input order by these indices."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
