"""Arbitrary input to the `Predictor` API (Hypothesis): any list of texts gives one record per text in order, as
valid JSON, or one `DataError` naming the first bad row; anything that is not a list of strings is refused."""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl.artifacts.manifest import MANIFEST_FILE
from mtl.data.files import text_problem
from mtl.errors import DataError, UserError
from mtl.runtime import Predictor
from tests.factory import TINY

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)


@functools.lru_cache(maxsize=None)
def predictor() -> Predictor:
    return Predictor.load(TINY.export("bert"), precision="fp32", threads=1, batch_size=3)


@PROPERTY
@given(texts=st.lists(st.text(max_size=300), max_size=10))
def test_any_texts_give_one_json_record_each_in_order_or_name_the_bad_row(texts):
    bad = next((i for i, text in enumerate(texts) if text_problem(text)), None)
    if bad is not None:
        with pytest.raises(DataError, match=f"^text {bad}: "):
            predictor().predict(texts)
        return
    records = predictor().predict(texts)
    assert len(records) == len(texts)
    json.dumps(records, allow_nan=False)  # valid JSON: no NaN anywhere
    for text, record in zip(texts, records):  # in input order, whatever the length sorting did
        alone = predictor().predict([text])[0]
        assert {task: r["label"] for task, r in record.items()} == {task: r["label"] for task, r in alone.items()}


@PROPERTY
@given(rows=st.lists(st.one_of(st.text(min_size=1), st.binary(), json_scalars), min_size=1, max_size=6))
def test_rows_that_are_not_strings_are_named_by_index(rows):
    bad = next((i for i, row in enumerate(rows) if text_problem(row)), None)
    if bad is None:
        assert len(predictor().predict(rows)) == len(rows)
        return
    with pytest.raises(DataError, match=f"^text {bad}: "):
        predictor().predict(rows)


@pytest.mark.parametrize("texts", ["one text", b"bytes", "x"])
def test_a_bare_string_is_not_a_list_of_texts(texts):
    with pytest.raises(DataError, match="not a single string; pass \\[text\\]"):
        predictor().predict(texts)
    with pytest.raises(DataError, match="not a single string"):
        predictor().embed(texts)


# --- a tampered export folder: `Predictor.load` succeeds and predicts, or is one typed error ---------------------


@functools.lru_cache(maxsize=None)
def _tampered_folder():
    """A private copy of the export whose manifest the property below rewrites (its files stay as exported)."""
    folder = TINY.copy_export("bert")
    return folder, json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))


json_values = st.recursive(
    json_scalars.filter(lambda v: v == v) | st.text(max_size=10),  # no NaN: what the JSON writer can write
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=5,
)


def _paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(draw=st.data())
def test_a_tampered_manifest_loads_and_predicts_or_is_one_user_error(draw):
    folder, original = _tampered_folder()
    data = json.loads(json.dumps(original))
    *parents, last = draw.draw(st.sampled_from(list(_paths(data))))
    target = functools.reduce(lambda node, key: node[key], parents, data)
    if draw.draw(st.booleans()):
        del target[last]
    else:
        target[last] = draw.draw(json_values)
    (folder / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")
    execution = draw.draw(st.sampled_from(["fused", "split"]))
    try:
        loaded = Predictor.load(folder, precision="fp32", execution=execution, threads=1)
    except UserError as err:  # ManifestError, RuntimeLoadError, ConfigError: one line each
        assert "\n" not in str(err)
        return
    records = loaded.predict(["the team won", "markets fell"])  # what loads, runs: no error at the first call
    for record in records:
        for task, result in record.items():
            assert result["label"] in loaded.manifest.labels(task)
    assert loaded.embed(["the team won"]).shape == (1, loaded.manifest.hidden_size)
