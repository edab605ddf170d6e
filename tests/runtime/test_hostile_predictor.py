"""Arbitrary input to the `Predictor` API (Hypothesis): any list of texts gives one record per text in order, as
valid JSON, or one `DataError` naming the first bad row; anything that is not a list of strings is refused."""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl.data.files import text_problem
from mtl.errors import DataError
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
