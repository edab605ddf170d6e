"""The export manifest as `load_manifest` reads it: every value of the type and range it must have, every file it
names inside the folder and fingerprinted; each problem one ManifestError line, whatever the file holds."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl.artifacts.manifest import MANIFEST_FILE, Manifest, file_digest, load_manifest, with_file_digests
from mtl.errors import ManifestError
from tests.factory import MAX_LENGTH, POSITIONS, TINY, VOCAB


@functools.lru_cache(maxsize=None)
def _original() -> dict:
    return json.loads((TINY.export("bert") / MANIFEST_FILE).read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def _scratch() -> Path:
    """One private copy of the export whose manifest the tests rewrite (the graphs are never touched)."""
    return TINY.copy_export("bert")


def _write(data, text: str | None = None) -> Path:
    folder = _scratch()
    (folder / MANIFEST_FILE).write_text(json.dumps(data) if text is None else text, encoding="utf-8")
    return folder


def _changed(path: str, value) -> dict:
    """The original manifest with the value at `path` ("a:b:0:c") replaced, or deleted where `value` is DELETE."""
    data = json.loads(json.dumps(_original()))
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(":")]
    target = functools.reduce(lambda node, key: node[key], parents, data)
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return data


DELETE = object()
ONE_LABEL_TASK = {"name": "topic", "labels": ["only"]}
# (path, new value, what the one-line error says). Each is a way a copied or damaged folder used to load "fine" and
# fail at the first prediction, or to predict with wrong labels.
BAD_VALUES = {
    "labels-a-string": ("tasks:0:labels", "Business", "tasks[0].labels must be a list, not str"),
    "labels-an-object": ("tasks:0:labels", {"a": 1, "b": 2}, "tasks[0].labels must be a list, not dict"),
    "label-a-number": ("tasks:0:labels:1", 7, "tasks[0].labels[1] must be a string, not int 7"),
    "label-empty": ("tasks:0:labels:1", " ", "every label must be a non-empty string"),
    "labels-duplicate": ("tasks:0:labels:1", "Business", "duplicate labels"),
    "task-name-a-number": ("tasks:0:name", 3, "tasks[0].name must be a string, not int 3"),
    "task-name-a-path": ("tasks:0:name", "../x", "invalid task name '../x'"),
    "tasks-duplicate": ("tasks:1", {"name": "topic", "labels": ["a", "b", "c"]}, "duplicate task names: topic"),
    "tasks-an-object": ("tasks", {"topic": ["a", "b"]}, "tasks must be a list, not dict"),
    "task-a-string": ("tasks:0", "topic", "tasks[0] must be an object, not str"),
    "max-length-float": ("max_length", 32.5, "max_length must be a whole number"),
    "max-length-bool": ("max_length", True, "max_length must be a whole number in [2, 1e+06], got True"),
    "max-length-string": ("max_length", "32", "max_length must be a whole number in [2, 1e+06], got '32'"),
    "max-length-past-positions": ("max_length", POSITIONS + 1, f"max_length {POSITIONS + 1} is more than the "
                                                                 f"encoder's {POSITIONS} positions"),
    "max-length-zero": ("max_length", 0, "max_length must be in [2, 1e+06], got 0"),
    "hidden-size-zero": ("hidden_size", 0, "hidden_size must be in [1, 1e+06], got 0"),
    "hidden-size-not-the-graph-s": ("hidden_size", 33, "tensors are [['batch_size', 32]"),
    "opset-huge": ("opset", 10**12, "opset must be in [7, 100]"),
    "pad-negative": ("pad_token_id", -1, "pad_token_id must be in [0, 2.14748e+09], got -1"),
    "pad-past-vocabulary": ("pad_token_id", VOCAB, f"pad_token_id {VOCAB} is past the encoder's vocabulary of "
                                                   f"{VOCAB} tokens"),
    "pad-float": ("pad_token_id", 0.5, "pad_token_id must be a whole number"),
    "vocab-size-string": ("vocab_size", "800", "vocab_size must be a whole number"),
    "input-names-a-string": ("input_names", "input_ids", "input_names must be a list, not str"),
    "input-name-unknown": ("input_names:0", "pixel_values", "unknown encoder input 'pixel_values'"),
    "pooling-unknown": ("pooling", "max", "unknown pooling 'max'; valid: cls, mean"),
    "graph-shape-a-string": ("graphs:model:outputs:0:shape", "batch", "graphs.model.outputs[0].shape must be a list"),
    "graph-dim-negative": ("graphs:model:outputs:0:shape:1", -4, "graphs.model.outputs[0].shape[1] must be in"),
    "graph-dim-bool": ("graphs:model:outputs:0:shape:1", True, "shape[1] must be a whole number"),
    "encoder-input-missing": ("graphs:encoder:inputs:1", DELETE, "graphs.encoder takes ['input_ids', "
                                                                 "'token_type_ids'], not the encoder inputs"),
    "head-graph-missing": ("graphs:heads:topic", DELETE, "graphs.heads lists ['sentiment']"),
    "labels-not-the-graph-s": ("tasks:0", ONE_LABEL_TASK, "needs at least 2 labels"),
    "label-count-off": ("tasks:0:labels", ["a", "b", "c"], "task 'topic' has 3 labels, but its graph outputs"),
    "variant-unknown": ("variants:int4", {}, "unknown precision 'int4'"),
    "variant-device": ("variants:fp32:device", "tpu", "variants.fp32.device is 'tpu'; valid: any, cpu, cuda"),
    "variant-status": ("variants:int8:validation:status", ["checked"], "validation.status is ['checked']"),
    "variant-file-a-number": ("variants:fp32:files:model", 3, "variants.fp32.files.model must be a string"),
    "variant-file-outside": ("variants:fp32:files:model", "/etc/passwd", "outside the export folder"),
    "variants-empty": ("variants", {}, "lists no variants"),
    "digest-not-hex": ("files:model.onnx:sha256", "x" * 64, "files.model.onnx.sha256 is 'xxxx"),
    "digest-size-float": ("files:model.onnx:size", 1.0, "files.model.onnx.size must be a whole number"),
    "digest-missing": ("files:model.onnx", DELETE, "records no size and sha256 for model.onnx"),
    "digests-a-list": ("files", [], "files must be an object, not list"),
    "versions-nested": ("versions:onnxruntime", {"a": 1}, "versions.onnxruntime must be a string"),
    "tokenizer-a-list": ("tokenizer", ["tokenizer.json"], "tokenizer must be a string"),
    "format-version-float": ("format_version", 1.0, "manifest format version 1.0 is not supported"),
}


@pytest.mark.parametrize("path, value, message", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_each_bad_value_is_one_manifest_error_naming_it(path, value, message):
    folder = _write(_changed(path, value))
    with pytest.raises(ManifestError) as caught:
        load_manifest(folder)
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith(str(folder / MANIFEST_FILE))


BAD_FILES = {
    "nested-200000": ('{"tasks": ' + "[" * 200_000 + "]" * 200_000 + "}", "nested 200001 levels deep"),
    "max-length-1e400": ('{"format": "mtl-onnx/export", "format_version": 1, "max_length": 1e400}',
                         "holds the number 1e400"),
    "nan": ('{"format": "mtl-onnx/export", "max_length": NaN}', "holds NaN"),
    "duplicate-key": ('{"format": "mtl-onnx/export", "format": "other"}', "has the key 'format' twice"),
    "not-an-object": ("[1, 2]", "not a JSON object"),
    "huge": (" " * (9 * 1024 * 1024), "more than 8,388,608 bytes"),
}


@pytest.mark.parametrize("text, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_manifest_file_past_the_json_limits_is_one_line(text, message):
    folder = _write(None, text)
    with pytest.raises(ManifestError) as caught:
        load_manifest(folder)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_export_records_each_file_and_the_encoder_s_sizes():
    folder = TINY.export("bert")
    manifest = load_manifest(folder)
    assert manifest.vocab_size == VOCAB and manifest.max_positions == POSITIONS and manifest.max_length == MAX_LENGTH
    assert set(manifest.files) == set(manifest.named_files())
    assert "tokenizer.json" in manifest.files and "heads/topic.onnx" in manifest.files
    for name, digest in manifest.files.items():
        assert digest == file_digest(folder / name)
    assert Manifest.from_dict(manifest.to_dict()) == manifest  # the round trip keeps every field
    assert with_file_digests(manifest, folder) == manifest


def test_a_manifest_older_than_the_digests_still_loads():
    data = _changed("files", DELETE)
    for key in ("vocab_size", "max_positions"):
        del data[key]
    manifest = load_manifest(_write(data))
    assert manifest.files == {} and manifest.vocab_size == 0 and manifest.max_positions == 0
    # its limits then come from the folder's config.json: a pad id past the vocabulary is still refused
    data["pad_token_id"] = VOCAB
    with pytest.raises(ManifestError, match=f"pad_token_id {VOCAB} is past the encoder's vocabulary"):
        load_manifest(_write(data))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    """Every path to a value inside `node` (its keys and list indices)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(draw=st.data())
def test_any_change_to_a_valid_manifest_loads_or_is_one_manifest_error(draw):
    data = json.loads(json.dumps(_original()))
    for _ in range(draw.draw(st.integers(1, 3))):
        paths = list(_paths(data))
        if not paths:
            break
        *parents, last = draw.draw(st.sampled_from(paths))
        target = functools.reduce(lambda node, key: node[key], parents, data)
        if draw.draw(st.booleans()):
            del target[last]
        else:
            target[last] = draw.draw(json_values)
    folder = _write(data)
    try:
        manifest = load_manifest(folder)
    except ManifestError as err:
        assert "\n" not in str(err)
        return
    # What loads is well-typed: no coerced string, float or bool stands in for what the runtime uses.
    for spec in manifest.tasks:
        assert isinstance(spec.labels, tuple) and all(isinstance(label, str) and label for label in spec.labels)
    for number in (manifest.max_length, manifest.hidden_size, manifest.pad_token_id, manifest.opset):
        assert type(number) is int
    assert all(isinstance(name, str) for name in manifest.named_files())
