"""`mtl.scale.predict_dataset` and `PredictBatches` on a real local Ray of 2 CPUs: every row once with its own
columns, bad rows as errors in their place, the labels single-process `Predictor.predict` gives, one ONNX Runtime
thread per reserved CPU."""

from __future__ import annotations

import pytest

from mtl.errors import ConfigError, ManifestError
from tests.scale.conftest import PRECISION, assert_same_predictions, single_process

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")

GOOD = ["Stocks rallied as the central bank held rates.", "The team won the final in extra time.",
        "A new chip doubles battery life.", "I loved this film!"]
BAD = {"": "field 'text': empty text", None: "missing field 'text'", "\u200b\u200b": "field 'text': empty text "
       "(only invisible or control characters)", "a\x00b": "field 'text': holds NUL characters"}


def test_every_row_once_with_its_columns_bad_rows_in_place(tiny, local_ray):
    from mtl.scale import predict_dataset

    export = tiny.export("bert")
    texts = [GOOD[i % len(GOOD)] + f" ({i})" for i in range(300)]
    bad_at = {7: "", 50: None, 123: "\u200b\u200b", 299: "a\x00b"}
    items = [{"key": f"k{i}", "text": bad_at.get(i, text)} for i, text in enumerate(texts)]
    ds = ray.data.from_items(items, override_num_blocks=7)
    got = predict_dataset(ds, export, precision=PRECISION, batch_size=8).take_all()

    assert len(got) == len(items)
    by_key = {row["key"]: row for row in got}
    assert sorted(by_key) == sorted(item["key"] for item in items)
    good_keys = [f"k{i}" for i in range(len(items)) if i not in bad_at]
    want = dict(zip(good_keys, single_process(export, [texts[int(k[1:])] for k in good_keys])))
    for key, row in by_key.items():
        index = int(key[1:])
        if index in bad_at:
            assert row["predictions"] is None
            assert row["error"].startswith(BAD[bad_at[index]]), row["error"]
            assert row["text"] == (bad_at[index] or "")
        else:
            assert row["error"] is None and row["text"] == texts[index]
            assert_same_predictions(_as_record(row["predictions"]), want[key])


def test_requested_tasks_only_and_a_preset_error_is_kept(tiny, local_ray):
    from mtl.scale import predict_dataset

    ds = ray.data.from_items([{"text": GOOD[0], "error": None}, {"text": GOOD[1], "error": "upstream: bad row"}])
    rows = sorted(predict_dataset(ds, tiny.export("bert"), tasks=["sentiment"], precision=PRECISION).take_all(),
                  key=lambda row: row["text"])
    assert list(rows[0]["predictions"]) == ["sentiment"]
    assert rows[1]["error"] == "upstream: bad row" and rows[1]["predictions"] is None


def test_the_schema_is_a_struct_per_task_with_a_map_of_probabilities(tiny, local_ray):
    from mtl.scale import predict_dataset

    ds = predict_dataset(ray.data.from_items([{"text": GOOD[0]}]), tiny.export("bert"), precision=PRECISION)
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    predictions = table.schema.field("predictions").type
    assert [predictions.field(i).name for i in range(predictions.num_fields)] == ["topic", "sentiment"]
    topic = predictions.field("topic").type
    assert topic.field("label").type == pa.string() and topic.field("score").type == pa.float64()
    assert topic.field("probabilities").type == pa.map_(pa.string(), pa.float64())


def test_mistakes_fail_in_the_driver_before_any_actor_starts(tiny, local_ray, tmp_path):
    from mtl.scale import predict_dataset

    ds = ray.data.from_items([{"text": GOOD[0]}])
    with pytest.raises(ConfigError, match="unknown task 'color'; valid: topic, sentiment"):
        predict_dataset(ds, tiny.export("bert"), tasks=["color"])
    with pytest.raises(ManifestError):
        predict_dataset(ds, tmp_path)
    with pytest.raises(ConfigError, match="threads_per_actor must be"):
        predict_dataset(ds, tiny.export("bert"), threads_per_actor=0)


def test_a_dataset_without_the_text_column_fails_naming_it(tiny, local_ray):
    from mtl.scale import predict_dataset
    from mtl.scale.job import user_error

    ds = predict_dataset(ray.data.from_items([{"body": GOOD[0]}]), tiny.export("bert"), precision=PRECISION)
    with pytest.raises(Exception) as raised:  # Ray's wrapping of the actor's error
        ds.take_all()
    error = user_error(raised.value)
    assert isinstance(error, ConfigError)
    assert str(error) == ("the dataset has no column 'text' (columns: body); name the text column with "
                          "text_column=")


def test_an_actor_runs_one_onnx_runtime_thread_per_cpu_it_reserved(tiny, local_ray):
    from mtl.scale import PredictBatches

    @ray.remote
    class Probe:
        def threads(self, folder: str) -> int:
            return PredictBatches(folder, precision=PRECISION).predictor.threads

    folder = str(tiny.export("bert"))
    for cpus in (1, 2):
        probe = Probe.options(num_cpus=cpus).remote()
        assert ray.get(probe.threads.remote(folder)) == cpus
        ray.kill(probe)


def _as_record(predictions: dict) -> dict:
    """A row's predictions struct as `predict`'s record (the map of probabilities comes back as pairs)."""
    return {task: {**p, "probabilities": dict(p["probabilities"])} for task, p in predictions.items()}
