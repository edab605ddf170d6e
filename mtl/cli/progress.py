"""Terminal presentation of training for the CLI: a rich progress bar and per-epoch metric tables.

Only the CLI prints; the library logs. Under torchrun only the main process draws.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from mtl.cli.tables import metrics_table, print_tables
from mtl.evaluate import per_task_metrics


class RichProgressCallback(TrainerCallback):
    def __init__(self, console: Console, task_names: tuple[str, ...]):
        self.console = console
        self.task_names = task_names
        self.progress: Progress | None = None
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
        )
        self.bar = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, status="")
        self.progress.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.update(self.bar, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.progress or not logs or "loss" not in logs:
            return
        status = f"epoch {state.epoch:.2f} loss {logs['loss']:.4f}"
        self.progress.update(self.bar, status=status)
        if not self.console.is_terminal:  # a log file gets a line per logging step instead of a live bar
            self.console.print(f"step {state.global_step}/{state.max_steps} {status}", highlight=False)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self.progress or not metrics:
            return
        per_task = per_task_metrics(metrics, self.task_names)
        table = metrics_table(f"validation after epoch {state.epoch:.2f}", per_task)
        print_tables(table, console=self.progress.console)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.stop()
            self.progress = None
