"""Predictions over a `ray.data.Dataset`: one `Predictor` per actor, for `Dataset.map_batches`.

    import ray
    from mtl.scale import predict_dataset

    ds = ray.data.read_parquet("s3://bucket/texts/")
    predict_dataset(ds, "onnx/", tasks=["topic"]).write_parquet("s3://bucket/predictions/")

Why an actor and not a task: the model is loaded once per actor, not per batch, and an ONNX Runtime session cannot
be pickled, so it is opened in the actor's `__init__` and never leaves it. Why `num_cpus` is set: an actor reserves
no CPU unless told, so Ray would pack more actors than cores and their ONNX Runtime threads would fight; each actor
reserves `threads_per_actor` CPUs and runs exactly that many intra-op threads (read back from what Ray assigned).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from mtl.config import Range
from mtl.errors import ConfigError
from mtl.scale.records import PREDICTION_FIELDS, record_columns, text_error

DEFAULT_BATCH_SIZE = 64
ACTORS = Range(1, 100_000, whole=True)
THREADS_PER_ACTOR = Range(1, 4096, whole=True)


def rows_per_call(batch_size: int) -> int:
    """Rows handed to one actor call: enough for the Predictor's length sorting to pay off (as local `predict`
    chunks its input)."""
    return max(1024, 16 * batch_size)


class PredictBatches:
    """The callable class for `Dataset.map_batches(..., batch_format="pyarrow")`: each batch comes back with the
    `text`, `predictions` and `error` columns of `predict`'s records, its other columns (an id, a row number) kept.

    A row whose text is missing, not a string or not classifiable (empty, invisible, binary) gets an `error` in its
    place; a row that arrives with an `error` already set (a reader's) keeps it and is not classified."""

    def __init__(self, export_folder: str, tasks: list[str] | None = None, text_column: str = "text",
                 precision: str = "auto", execution: str = "fused", batch_size: int = DEFAULT_BATCH_SIZE,
                 threads: int | None = None):
        from mtl.runtime import Predictor

        self.text_column = text_column
        self.predictor = Predictor.load(export_folder, precision, "cpu", threads or assigned_cpus(), execution,
                                        batch_size)
        self.tasks = self.predictor.check_tasks(tasks)

    def __call__(self, batch: pa.Table) -> pa.Table:
        names = batch.column_names
        if self.text_column not in names:
            raise ConfigError(f"the dataset has no column {self.text_column!r} (columns: {', '.join(names)}); "
                              f"name the text column with text_column=")
        if "predictions" in names:
            raise ConfigError("the dataset already has a 'predictions' column; rename or drop it first")
        texts = batch.column(self.text_column).to_pylist()
        given = batch.column("error").to_pylist() if "error" in names else [None] * len(texts)
        errors = [given[i] or text_error(text, self.text_column) for i, text in enumerate(texts)]
        good = [text for text, error in zip(texts, errors) if error is None]
        records = self.predictor.predict(good, self.tasks) if good else []
        kept = [name for name in names if name not in (self.text_column, *PREDICTION_FIELDS)]
        columns = {name: batch.column(name) for name in kept}
        columns.update(record_columns(texts, errors, records, self.tasks))
        return pa.table(columns)


def assigned_cpus() -> int:
    """The CPUs Ray reserved for this actor (at least 1): the ONNX Runtime thread count that uses them without
    oversubscribing the node."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    return max(1, round(cpus))


def predict_dataset(ds, export_folder: str | Path, tasks: list[str] | None = None, text_column: str = "text", *,
                    actors: int | None = None, threads_per_actor: int = 1, precision: str = "auto",
                    execution: str = "fused", batch_size: int = DEFAULT_BATCH_SIZE) -> Any:
    """The predictions of `ds` as a lazy `ray.data.Dataset`: every row of `ds` once, its other columns kept, plus
    `text`, `predictions` (a struct per task: label, score, probabilities) and `error` (see `mtl.scale.records`).

    `actors`: the size of the actor pool (default: the cluster's CPUs // threads_per_actor); each actor reserves
    `threads_per_actor` CPUs and runs that many ONNX Runtime threads. The export folder must be at the same path on
    every node. Tasks, precision and execution are checked here, before anything runs."""
    import ray

    export_folder = checked_export(export_folder, tasks, precision, execution, batch_size)
    THREADS_PER_ACTOR.check("threads_per_actor", threads_per_actor)
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads_per_actor)
    ACTORS.check("actors", actors)
    return ds.map_batches(
        PredictBatches,
        fn_constructor_kwargs={"export_folder": export_folder, "tasks": tasks, "text_column": text_column,
                               "precision": precision, "execution": execution, "batch_size": batch_size},
        batch_size=rows_per_call(batch_size), batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads_per_actor)


def checked_export(export_folder, tasks, precision: str, execution: str, batch_size: int) -> str:
    """The export folder as an absolute path string, once its manifest reads and the choices fit it: a mistake is
    one error in the driver, not an actor failing on every node."""
    from mtl.artifacts.manifest import check_choices, load_manifest
    from mtl.data.batching import check_batch_size

    check_choices(precision, "cpu", execution)
    check_batch_size(batch_size)
    manifest = load_manifest(export_folder)
    unknown = [task for task in tasks or [] if task not in manifest.task_names]
    if unknown:
        raise ConfigError(f"unknown task {unknown[0]!r}; valid: {', '.join(manifest.task_names)}")
    return str(Path(export_folder).absolute())
