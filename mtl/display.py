"""Rich tables shared by the CLI's commands (no torch: the ONNX paths use them too)."""

from __future__ import annotations

from rich.table import Table

from mtl.metrics import METRIC_NAMES


def metrics_table(title: str, per_task: dict[str, dict[str, float]]) -> Table:
    """Accuracy, macro-F1 and macro-recall per task, in percent."""
    table = Table(title=title)
    table.add_column("task")
    for name in METRIC_NAMES:
        table.add_column(name.replace("_", "-"), justify="right")
    for task, values in per_task.items():
        table.add_row(task, *(f"{100 * values[m]:.2f}" for m in METRIC_NAMES))
    return table
