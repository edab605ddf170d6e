"""Variants judged on real data: per-task accuracy of each precision next to fp32's, and how often its argmax
agrees with fp32's. Runs the exported folder through the runtime Predictor, i.e. exactly what users will run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl.config import ModelConfig
from mtl.data.files import Example, check_labels, read_examples


def load_validation_data(files: dict[str, Path], config: ModelConfig, text_field: str = "text",
                         label_field: str = "label") -> dict[str, list[Example]]:
    """Read and check every file before the export starts: unknown task, missing file, unknown label."""
    data = {}
    for task, path in files.items():
        spec = config.task(task)
        examples = read_examples(Path(path), text_field, label_field)
        check_labels(Path(path), examples, spec.labels)
        data[task] = examples
    return data


def accuracy_report(folder: Path, precisions: list[str], data: dict[str, list[Example]], threads: int,
                    batch_size: int = 32) -> dict[str, dict]:
    """{task: {"examples", "accuracy": {precision: a}, "agreement_with_fp32": {precision: a},
    "drop_points": {precision: 100 * (fp32 - precision)}}}."""
    from mtl.runtime import Predictor

    predictors = {p: Predictor.load(folder, precision=p, device="cpu", threads=threads, batch_size=batch_size)
                  for p in precisions}
    report = {}
    for task, examples in data.items():
        labels = predictors["fp32"].manifest.labels(task)
        truth = np.array([labels.index(e.label) for e in examples])
        texts = [e.text for e in examples]
        predicted = {p: pr.logits(texts, [task])[task].argmax(-1) for p, pr in predictors.items()}
        accuracy = {p: float(np.mean(pred == truth)) for p, pred in predicted.items()}
        others = [p for p in precisions if p != "fp32"]
        report[task] = {
            "examples": len(examples),
            "accuracy": {p: round(a, 6) for p, a in accuracy.items()},
            "agreement_with_fp32": {p: round(float(np.mean(predicted[p] == predicted["fp32"])), 6) for p in others},
            "drop_points": {p: round(100 * (accuracy["fp32"] - accuracy[p]), 4) for p in others},
        }
    return report


def int8_problems(report: dict[str, dict], max_drop_points: float) -> list[str]:
    """One line per task where int8 loses more accuracy than allowed."""
    problems = []
    for task, figures in report.items():
        drop = figures["drop_points"].get("int8")
        if drop is not None and drop > max_drop_points:
            problems.append(
                f"task {task}: int8 accuracy {100 * figures['accuracy']['int8']:.2f}% vs fp32 "
                f"{100 * figures['accuracy']['fp32']:.2f}% ({drop:.2f} points lost; limit {max_drop_points:g})"
            )
    return problems
