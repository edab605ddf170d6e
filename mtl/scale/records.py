"""The prediction record as Arrow columns: what `predict` writes for each text, in a form Parquet and Ray Data hold
without guessing types. pyarrow only (no ray, no torch).

    text          string
    predictions   struct<TASK: struct<label: string, score: double, probabilities: map<string, double>>>, or null
    error         string, or null (exactly one of predictions and error is set)

A struct per task, because the tasks are fixed by the export and their names are ASCII identifiers that differ by more
than case (`mtl.config`), so `predictions.topic.label` is a column Parquet stores (and a reader prunes) on its own, in
Spark and DuckDB alike. The probabilities are a map, because labels are data, not names: any Unicode, a `/` or a `.`
(`Sci/Tech`), labels differing only by case, a different set per task; as struct fields they would break column
paths and case-insensitive engines, while a map keeps them as strings, in the export's label order, with one schema
shape for every task.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from mtl.data.files import text_problem

PREDICTION_FIELDS = ("text", "predictions", "error")


def prediction_type(tasks: list[str]) -> pa.DataType:
    """The `predictions` column's type for these tasks, in this order."""
    task_type = pa.struct([("label", pa.string()), ("score", pa.float64()),
                           ("probabilities", pa.map_(pa.string(), pa.float64()))])
    return pa.struct([(task, task_type) for task in tasks])


def text_error(value: Any, column: str) -> str | None:
    """Why a value of the text column cannot be classified, or None; worded as the JSON Lines reader words it."""
    if value is None:
        return f"missing field {column!r}"
    if not isinstance(value, str):
        return f"field {column!r}: must be a string, got {type(value).__name__}"
    problem = text_problem(value)
    return f"field {column!r}: {problem}" if problem else None


def record_columns(texts: list[Any], errors: list[str | None], records: list[dict], tasks: list[str]) -> dict:
    """The `text`, `predictions` and `error` columns of a batch. `records` are `Predictor.predict`'s, one per row
    without an error, in row order; a row with an error gets a null prediction and keeps its place."""
    predictions: list[dict | None] = []
    made = iter(records)
    for error in errors:
        predictions.append(None if error else _arrow_record(next(made), tasks))
    return {
        "text": pa.array([text if isinstance(text, str) else "" for text in texts], pa.string()),
        "predictions": pa.array(predictions, prediction_type(tasks)),
        "error": pa.array(errors, pa.string()),
    }


def _arrow_record(record: dict, tasks: list[str]) -> dict:
    # pyarrow builds a map from a list of (key, value) pairs; the order is the export's label order.
    return {task: {"label": record[task]["label"], "score": record[task]["score"],
                   "probabilities": list(record[task]["probabilities"].items())} for task in tasks}


def json_record(row: dict) -> dict:
    """A row of the Arrow columns back as the JSON record `predict` writes (probabilities as an object again, the
    null one of predictions/error left out); other columns (`row`, an id) come first."""
    record = {key: value for key, value in row.items() if key not in PREDICTION_FIELDS}
    record["text"] = row["text"]
    if row["error"] is not None:
        record["error"] = row["error"]
        return record
    record["predictions"] = {task: {"label": p["label"], "score": p["score"], "probabilities": dict(p["probabilities"])}
                             for task, p in row["predictions"].items()}
    return record


def json_line(row: dict) -> str:
    """One Arrow row as a line of JSON Lines: `json_record`, written as local `predict` writes its lines (UTF-8 as
    is; never NaN, which is not JSON and which the records cannot hold)."""
    return json.dumps(json_record(row), ensure_ascii=False, allow_nan=False) + "\n"
