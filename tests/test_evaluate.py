"""Metrics: the figures agree with scikit-learn's (the convention the docstring promises, so they compare with
published ones), including classes that only the truth or only the prediction holds; the flat form the Trainer logs
maps back to per-task figures; and evaluating a predictor on a labelled file scores what it predicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from mtl.config import ModelConfig, TaskSpec
from mtl.evaluate import METRIC_NAMES, classification_metrics, evaluate_files, flat_metrics, per_task_metrics


def _sklearn(y_true, y_pred) -> dict[str, float]:
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
        "macro_recall": recall_score(y_true, y_pred, average="macro", zero_division=0),
    }


@pytest.mark.parametrize("seed", range(40))
def test_metrics_match_scikit_learn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    n, classes = int(rng.integers(1, 60)), int(rng.integers(2, 7))
    y_true = rng.integers(0, classes, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, classes, n))  # better than chance, not perfect
    assert classification_metrics(y_true, y_pred) == pytest.approx(_sklearn(y_true, y_pred), abs=1e-12)


@pytest.mark.parametrize("y_true, y_pred", [
    ([0, 0, 1, 1], [0, 0, 1, 1]),  # perfect
    ([0, 1, 2, 3], [1, 2, 3, 0]),  # all wrong
    ([0, 0, 1, 1], [0, 2, 1, 2]),  # class 2 only predicted: precision 0, recall undefined -> counted as 0
    ([0, 1, 2, 2], [0, 1, 1, 1]),  # class 2 never predicted: recall 0
    ([3, 3, 3], [3, 3, 3]),  # one class only
    ([5, 9], [9, 5]),  # labels that are not 0..k-1
    ([0], [1]),
])
def test_metrics_match_scikit_learn_with_classes_missing_from_truth_or_prediction(y_true, y_pred):
    ours = classification_metrics(np.array(y_true), np.array(y_pred))
    assert ours == pytest.approx(_sklearn(y_true, y_pred), abs=1e-12)
    assert set(ours) == set(METRIC_NAMES) and all(type(v) is float for v in ours.values())


def test_metrics_refuse_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="one length"):
        classification_metrics(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics(np.array([]), np.array([]))


@pytest.mark.parametrize("tasks", [("topic", "sentiment"), ("a", "a_b", "b_accuracy")])  # names holding "_"
def test_flat_metrics_map_back_to_per_task_figures(tasks):
    rng = np.random.default_rng(0)
    per_task = {task: {m: float(rng.random()) for m in METRIC_NAMES} for task in tasks}
    flat = flat_metrics(per_task)
    assert len(flat) == len(tasks) * len(METRIC_NAMES)
    logged = {f"eval_{key}": value for key, value in flat.items()}  # as the Trainer logs them
    logged.update(eval_loss=0.5, eval_runtime=1.0, epoch=1.0)  # what else it logs is ignored
    assert per_task_metrics(logged, tasks) == per_task
    assert per_task_metrics(flat, tasks, prefix="") == per_task
    assert per_task_metrics(logged, (*tasks, "unscored")) == per_task  # a task without figures is left out


class FixedPredictor:
    """A LogitsPredictor whose logits say class (i mod 3) for the i-th text, whatever it reads."""

    config = ModelConfig(tasks=(TaskSpec("sentiment", ("negative", "neutral", "positive")),))

    def logits(self, texts, tasks=None, batch_size=None):
        return {"sentiment": np.eye(3, dtype=np.float32)[np.arange(len(texts)) % 3]}


def test_evaluate_files_scores_the_predictions_against_the_file_labels(tmp_path):
    labels = ["negative", "negative", "positive", "neutral", "positive", "positive", "neutral"]
    path = tmp_path / "sentiment.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": y}) + "\n" for i, y in enumerate(labels)))
    predicted = [i % 3 for i in range(len(labels))]
    truth = [("negative", "neutral", "positive").index(y) for y in labels]
    result = evaluate_files(FixedPredictor(), {"sentiment": path})
    assert result == {"sentiment": pytest.approx(_sklearn(truth, predicted), abs=1e-12)}
