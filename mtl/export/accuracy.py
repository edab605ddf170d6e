"""Variants judged on real labelled data: each task's accuracy, macro-F1 and macro-recall for every precision next
to fp32's, and how often its argmax agrees with fp32's. Runs the exported folder through the runtime Predictor,
i.e. exactly what users will run. The labelled data is the user's (`--validation-data`) or, by default, the
validation files the checkpoint was trained with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl.artifacts.checkpoint import recorded_validation_files
from mtl.artifacts.manifest import Manifest
from mtl.artifacts.validation import Int8Limits
from mtl.config import ModelConfig
from mtl.data.files import Example, read_examples
from mtl.errors import UserError
from mtl.evaluate import METRIC_NAMES, classification_metrics

# The two figures an int8 variant is held to, and what each is called in messages.
GATED_METRICS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def labelled_data(checkpoint: Path, config: ModelConfig, validation_data: dict[str, Path], text_field: str,
                  label_field: str, recorded: bool) -> tuple[dict[str, list[Example]], dict[str, Path], list[str]]:
    """(examples per task, the files they come from, notes): the files given, else (when `recorded`) the
    validation files the checkpoint was trained with, read by the fields it was trained with."""
    if validation_data or not recorded:
        return load_validation_data(validation_data, config, text_field, label_field), dict(validation_data), []
    files, text_field, label_field, notes = recorded_validation_files(checkpoint)
    data = {}
    for task, path in files.items():
        if task not in config.task_names:
            continue
        try:
            data.update(load_validation_data({task: path}, config, text_field, label_field))
        except UserError:
            # The user did not name this file: its content (which the error would quote) is not shown.
            notes.append(f"the validation file of task {task} that the checkpoint records ({path}) cannot be read "
                         f"as labelled data for it, so int8 is not checked on it; give labelled data with "
                         f"--validation-data {task}=FILE")
    return data, {task: files[task] for task in data}, notes


def load_validation_data(files: dict[str, Path], config: ModelConfig, text_field: str = "text",
                         label_field: str = "label") -> dict[str, list[Example]]:
    """Read and check every file before the export starts: unknown task, missing file, unknown label."""
    data = {}
    for task, path in files.items():
        spec = config.task(task)
        examples = read_examples(Path(path), text_field, label_field, labels=spec.labels)
        data[task] = examples
    return data


def accuracy_report(folder: Path, manifest: Manifest, data: dict[str, list[Example]], threads: int,
                    batch_size: int = 32) -> dict[str, dict]:
    """{task: {"examples", "metrics": {precision: {accuracy, macro_f1, macro_recall}},
    "agreement_with_fp32": {precision: share}}} of every variant of `manifest`, run from `folder` (whose manifest
    file need not be written yet: export writes it once, with these figures)."""
    from mtl.runtime import Predictor

    precisions = list(manifest.variants)
    predictors = {p: Predictor(folder, manifest, p, "cpu", threads, "fused", batch_size) for p in precisions}
    report = {}
    for task, examples in data.items():
        labels = predictors["fp32"].manifest.labels(task)
        truth = np.array([labels.index(e.label) for e in examples])
        texts = [e.text for e in examples]
        predicted = {p: pr.logits(texts, [task])[task].argmax(-1) for p, pr in predictors.items()}
        report[task] = {
            "examples": len(examples),
            "metrics": {p: {k: round(v, 6) for k, v in classification_metrics(truth, pred).items()}
                        for p, pred in predicted.items()},
            "agreement_with_fp32": {p: round(float(np.mean(predicted[p] == predicted["fp32"])), 6)
                                    for p in precisions if p != "fp32"},
        }
    return report


def drop_points(figures: dict, precision: str) -> dict[str, float]:
    """Points each metric loses against fp32 on one task (negative: it gains)."""
    fp32, other = figures["metrics"]["fp32"], figures["metrics"][precision]
    return {name: round(100 * (fp32[name] - other[name]), 4) for name in METRIC_NAMES}


def int8_problems(report: dict[str, dict], limits: Int8Limits) -> list[str]:
    """One line per task and gated metric where int8 loses more than its limit."""
    problems = []
    for task, figures in report.items():
        if "int8" not in figures["metrics"]:
            continue
        drops = drop_points(figures, "int8")
        for metric, shown in GATED_METRICS.items():
            limit = getattr(limits, metric)
            if drops[metric] > limit:
                problems.append(
                    f"task {task}: int8 {shown} {100 * figures['metrics']['int8'][metric]:.2f} against fp32 "
                    f"{100 * figures['metrics']['fp32'][metric]:.2f} ({drops[metric]:.2f} points lost; "
                    f"limit {limit:g})")
    return problems
