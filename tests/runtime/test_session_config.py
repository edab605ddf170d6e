"""A variant's ONNX Runtime session config travels with the export: the runtime applies what the manifest records
to every session of that variant and nothing to the others, a manifest written before the field existed loads with
none, and a malformed one fails on load in one line."""

from __future__ import annotations

import json

import pytest

from mtl.artifacts.io_spec import ENCODER_GRAPH, FUSED_GRAPH
from mtl.artifacts.manifest import MANIFEST_FILE, load_manifest
from mtl.errors import ManifestError
from mtl.runtime import Predictor
from mtl.runtime.predictor import head_key
from mtl.runtime.session import session_options
from tests.factory import TASKS, TINY, assert_int8_close

KEY = "optimization.disable_specified_optimizers"
TEXTS = ["the movie was great", "stocks rally as the bank cuts rates", "team lost the game", "a"]


def _entry(graph_session) -> str | None:
    options = graph_session.session.get_session_options()
    try:
        return options.get_session_config_entry(KEY)
    except RuntimeError:  # ORT's answer for a key that was never set
        return None


def _sessions(folder, precision: str) -> list:
    split = Predictor.load(folder, precision=precision, threads=1, execution="split")
    fused = Predictor.load(folder, precision=precision, threads=1)
    return [split.session(ENCODER_GRAPH), *(split.session(head_key(t)) for t in TASKS), fused.session(FUSED_GRAPH)]


def _edit_manifest(folder, edit) -> None:
    data = json.loads((folder / MANIFEST_FILE).read_text())
    edit(data)
    (folder / MANIFEST_FILE).write_text(json.dumps(data))


def test_the_variants_session_config_reaches_every_one_of_its_sessions_only():
    folder = TINY.export("bert")
    assert load_manifest(folder).variants["int8"].session_config == {KEY: "SkipLayerNormFusion"}
    assert [_entry(s) for s in _sessions(folder, "int8")] == ["SkipLayerNormFusion"] * (2 + len(TASKS))
    assert [_entry(s) for s in _sessions(folder, "fp32")] == [None] * (2 + len(TASKS))


def test_session_options_apply_the_given_entries():
    options = session_options(1, config={KEY: "SkipLayerNormFusion"})
    assert options.get_session_config_entry(KEY) == "SkipLayerNormFusion"
    with pytest.raises(RuntimeError):
        session_options(1).get_session_config_entry(KEY)


def test_an_old_manifest_without_session_config_loads_and_applies_none():
    folder = TINY.copy_export("bert")
    expected = Predictor.load(folder, precision="int8", threads=1).logits(TEXTS)
    _edit_manifest(folder, lambda d: [v.pop("session_config") for v in d["variants"].values()])
    assert all(v.session_config == {} for v in load_manifest(folder).variants.values())
    assert [_entry(s) for s in _sessions(folder, "int8")] == [None] * (2 + len(TASKS))
    got = Predictor.load(folder, precision="int8", threads=1).logits(TEXTS)
    for task, values in expected.items():  # the setting changes the kernels and the speed, not what is computed
        assert_int8_close(got[task], values)


@pytest.mark.parametrize("config, message", [
    (["SkipLayerNormFusion"], "variant int8: session_config must be an object, not list"),
    ({"session.intra_op.allow_spinning": "0"},
     "variant int8: unknown session_config key 'session.intra_op.allow_spinning'; valid: " + KEY),
    ({KEY: 1}, f"variant int8: session_config {KEY} is 1, not a comma-separated list of names"),
    ({KEY: "SkipLayerNormFusion; rm -rf"}, f"session_config {KEY} is 'SkipLayerNormFusion; rm -rf', not a"),
    ({KEY: ""}, f"session_config {KEY} is '', not a comma-separated list of names"),
])
def test_a_malformed_session_config_is_one_manifest_error(config, message):
    folder = TINY.copy_export("bert")
    _edit_manifest(folder, lambda d: d["variants"]["int8"].update(session_config=config))
    with pytest.raises(ManifestError) as caught:
        Predictor.load(folder, precision="int8")
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{folder / MANIFEST_FILE}: malformed manifest (") and message in text
