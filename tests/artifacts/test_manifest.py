"""The export manifest as `load_manifest` reads it: the checkpoint's ModelConfig and each variant's typed validation
record in it, every value of the type and range it must have, every file it names inside the folder and
fingerprinted; each problem one ManifestError line, whatever the file holds. Format 1 manifests still load."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl.artifacts.checkpoint import read_model_config
from mtl.artifacts.io_spec import logits_name
from mtl.artifacts.manifest import MANIFEST_FILE, Manifest, file_digest, load_manifest, with_file_digests
from mtl.artifacts.validation import (
    Int8Limits,
    LabelledFigures,
    ParityFigures,
    Tolerance,
    ValidationRecord,
)
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
    "labels-a-string": ("model:tasks:0:labels", "Business", "model.tasks[0].labels must be a list, not str"),
    "labels-an-object": ("model:tasks:0:labels", {"a": 1, "b": 2}, "model.tasks[0].labels must be a list, not dict"),
    "label-a-number": ("model:tasks:0:labels:1", 7, "model.tasks[0].labels[1] must be a string, not int 7"),
    "label-empty": ("model:tasks:0:labels:1", " ", "every label must be a non-empty string"),
    "labels-duplicate": ("model:tasks:0:labels:1", "Business", "duplicate labels"),
    "task-name-a-number": ("model:tasks:0:name", 3, "model.tasks[0].name must be a string, not int 3"),
    "task-name-a-path": ("model:tasks:0:name", "../x", "invalid task name '../x'"),
    "tasks-duplicate": ("model:tasks:1", {"name": "topic", "labels": ["a", "b", "c"]}, "duplicate task names: topic"),
    "tasks-an-object": ("model:tasks", {"topic": ["a", "b"]}, "model.tasks must be a list, not dict"),
    "task-a-string": ("model:tasks:0", "topic", "model.tasks[0] must be an object, not str"),
    "max-length-float": ("model:max_length", 32.5, "max_length must be a whole number"),
    "max-length-bool": ("model:max_length", True, "max_length must be a whole number in [2, 1e+06], got True"),
    "max-length-string": ("model:max_length", "32", "max_length must be a whole number in [2, 1e+06], got '32'"),
    "max-length-past-positions": ("model:max_length", POSITIONS + 1, f"max_length {POSITIONS + 1} is more than the "
                                                                 f"encoder's {POSITIONS} positions"),
    "max-length-zero": ("model:max_length", 0, "max_length must be in [2, 1e+06], got 0"),
    "hidden-size-zero": ("hidden_size", 0, "hidden_size must be in [1, 1e+06], got 0"),
    "hidden-size-not-the-graph-s": ("hidden_size", 33, "tensors are [['batch_size', 32]"),
    "opset-huge": ("opset", 10**12, "opset must be in [7, 100]"),
    "pad-negative": ("pad_token_id", -1, "pad_token_id must be in [0, 2.14748e+09], got -1"),
    "pad-past-vocabulary": ("pad_token_id", VOCAB, f"pad_token_id {VOCAB} is past the encoder's vocabulary of "
                                                   f"{VOCAB} tokens"),
    "pad-float": ("pad_token_id", 0.5, "pad_token_id must be a whole number"),
    "vocab-size-string": ("vocab_size", "800", "vocab_size must be a whole number"),
    "input-names-a-string": ("model:input_names", "input_ids", "input_names must be a list, not str"),
    "input-name-unknown": ("model:input_names:0", "pixel_values", "unknown encoder input 'pixel_values'"),
    "pooling-unknown": ("model:pooling", "max", "unknown pooling 'max'; valid: cls, mean"),
    "graph-shape-a-string": ("graphs:model:outputs:0:shape", "batch", "graphs.model.outputs[0].shape must be a list"),
    "graph-dim-negative": ("graphs:model:outputs:0:shape:1", -4, "graphs.model.outputs[0].shape[1] must be in"),
    "graph-dim-bool": ("graphs:model:outputs:0:shape:1", True, "shape[1] must be a whole number"),
    "encoder-input-missing": ("graphs:encoder:inputs:1", DELETE, "graphs.encoder takes ['input_ids', "
                                                                 "'token_type_ids'], not the encoder inputs"),
    "head-graph-missing": ("graphs:heads:topic", DELETE, "graphs.heads lists ['sentiment']"),
    "labels-not-the-graph-s": ("model:tasks:0", ONE_LABEL_TASK, "needs at least 2 labels"),
    "label-count-off": ("model:tasks:0:labels", ["a", "b", "c"], "task 'topic' has 3 labels, but its graph outputs"),
    "variant-unknown": ("variants:int4", {}, "unknown precision 'int4'"),
    "variant-device": ("variants:fp32:device", "tpu", "variants.fp32.device is 'tpu'; valid: any, cpu, cuda"),
    "variant-status": ("variants:int8:validation:status", ["checked"], "validation.status is ['checked']"),
    "variant-status-unknown": ("variants:int8:validation:status", "fine", "variants.int8.validation.status is "
                                                                          "'fine'; valid: checked, forced, unchecked"),
    "parity-passed-a-string": ("variants:fp32:validation:passed", "yes", "variants.fp32.validation.passed must be "
                                                                         "true or false, not str 'yes'"),
    "parity-missing-a-key": ("variants:fp32:validation:device", DELETE, "missing key 'variants.fp32.validation."
                                                                        "device'"),
    "parity-case-not-a-pair": ("variants:fp32:validation:cases:0", [1], "variants.fp32.validation.cases[0] must be "
                                                                        "[batch, sequence]"),
    "parity-case-zero": ("variants:fp32:validation:cases:0:1", 0, "variants.fp32.validation.cases[0] must be in"),
    "parity-diff-negative": ("variants:fp32:validation:max_abs_diff:encoder", -1.0, "variants.fp32.validation."
                                                                                    "max_abs_diff.encoder must be in"),
    "parity-diff-a-string": ("variants:fp32:validation:max_abs_diff:encoder", "0", "max_abs_diff.encoder must be a "
                                                                                   "number"),
    "parity-tolerance-a-number": ("variants:fp32:validation:tolerance", 0.1, "variants.fp32.validation.tolerance "
                                                                             "must be an object, not float 0.1"),
    "parity-atol-negative": ("variants:fp32:validation:tolerance:atol", -1, "validation.tolerance.atol must be in"),
    "parity-agreement-past-one": ("variants:fp32:validation:argmax_agreement_on_random_tokens:topic", 1.5,
                                  "argmax_agreement_on_random_tokens.topic must be in [0, 1], got 1.5"),
    "real-data-accuracy-past-one": ("variants:int8:validation:real_data", {"topic": {
        "examples": 3, "accuracy": 1.5, "macro_f1": 0.5, "macro_recall": 0.5}}, "real_data.topic.accuracy must be "
                                                                                "in [0, 1], got 1.5"),
    "real-data-examples-a-float": ("variants:int8:validation:real_data", {"topic": {
        "examples": 3.5, "accuracy": 1, "macro_f1": 0.5, "macro_recall": 0.5}}, "real_data.topic.examples must be "
                                                                                "a whole number"),
    "real-data-drop-a-string": ("variants:int8:validation:real_data", {"topic": {
        "examples": 3, "accuracy": 1, "macro_f1": 0.5, "macro_recall": 0.5, "drop_points": {"accuracy": "1"}}},
        "real_data.topic.drop_points.accuracy must be a number"),
    "real-data-a-list": ("variants:int8:validation:real_data", [], "validation.real_data must be an object"),
    "data-file-a-number": ("variants:int8:validation:data", {"topic": 3}, "validation.data.topic must be a string"),
    "limits-missing-a-key": ("variants:int8:validation:limits", {"max_accuracy_drop_points": 1},
                             "missing key 'variants.int8.validation.limits.max_macro_f1_drop_points'"),
    "limits-past-100": ("variants:int8:validation:limits", {"max_accuracy_drop_points": 1,
                                                            "max_macro_f1_drop_points": 101},
                        "limits.max_macro_f1_drop_points must be in [0, 100]"),
    "model-missing": ("model", DELETE, "missing key 'model'"),
    "model-a-list": ("model", [], "model must be an object, not list"),
    "model-max-length-missing": ("model:max_length", DELETE, "missing key 'model.max_length'"),
    "model-format-other": ("model:format", "other", "not an mtl-onnx model config"),
    "model-dropout-a-string": ("model:dropout", "0.1", "dropout must be a number in [0, 1]"),
    "variant-file-a-number": ("variants:fp32:files:model", 3, "variants.fp32.files.model must be a string"),
    "variant-file-outside": ("variants:fp32:files:model", "/etc/passwd", "outside the export folder"),
    "variants-empty": ("variants", {}, "lists no variants"),
    # One file cannot be two graphs: the fused graph named as the encoder would load, then fail or embed wrongly.
    "file-for-two-graphs": ("variants:fp32:files:encoder", "model.onnx", "variant fp32 names model.onnx for two of "
                                                                        "its graphs"),
    "file-for-two-heads": ("variants:fp32:files:heads:sentiment", "heads/./topic.onnx", "variant fp32 names "
                                                                                        "heads/topic.onnx for two"),
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
    assert manifest.vocab_size == VOCAB and manifest.max_positions == POSITIONS
    assert manifest.model.max_length == MAX_LENGTH
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
    for spec in manifest.model.tasks:
        assert isinstance(spec.labels, tuple) and all(isinstance(label, str) and label for label in spec.labels)
    for number in (manifest.model.max_length, manifest.hidden_size, manifest.pad_token_id, manifest.opset):
        assert type(number) is int
    assert all(isinstance(name, str) for name in manifest.named_files())
    for variant in manifest.variants.values():
        parity = variant.validation.parity
        if parity is not None:
            assert all(type(size) is int for case in parity.cases for size in case)
            assert all(type(d) in (int, float) for d in parity.max_abs_diff.values())
            assert type(parity.passed) is bool


def test_the_manifest_holds_the_checkpoint_s_model_config_once():
    manifest, data = load_manifest(TINY.export("bert")), _original()
    config = read_model_config(TINY.checkpoint("bert"))
    # As the checkpoint has it, but for the input names: those the graphs take, in their order (BERT's take all).
    assert manifest.model == replace(config, input_names=manifest.encoder.input_names)
    assert set(manifest.model.input_names) == set(config.input_names)
    assert data["model"] == manifest.model.to_dict() and data["format_version"] == 2
    assert not {"tasks", "max_length", "pooling", "input_names", "backbone"} & set(data)  # not declared twice


def test_a_format_1_manifest_still_loads():
    """Format 1 had the model config's fields at the top level, and no dropout (no graph uses it)."""
    data = json.loads(json.dumps(_original()))
    model = data.pop("model")
    data.update({key: model[key] for key in ("tasks", "max_length", "pooling", "input_names", "backbone")},
                format_version=1)
    loaded = load_manifest(_write(data))
    assert loaded == load_manifest(TINY.export("bert"))
    data["max_length"] = 0
    with pytest.raises(ManifestError, match="max_length must be in"):
        load_manifest(_write(data))


def test_each_variant_s_validation_is_a_typed_record():
    variants = load_manifest(TINY.export("bert")).variants
    for precision, variant in variants.items():
        parity = variant.validation.parity
        assert isinstance(parity, ParityFigures) and parity.passed and parity.device == "cpu"
        assert (parity.tolerance is None) == (precision == "int8")  # int8: shapes and finite values only
        assert {"encoder", "heads/topic", f"model:{logits_name('topic')}"} <= set(parity.max_abs_diff)
    # The factory's exports have no labelled data: int8 is unchecked, and no other variant has a status.
    assert variants["int8"].validation.status == "unchecked" and not variants["int8"].validation.real_data
    assert variants["fp32"].validation.status is None


def test_a_full_validation_record_survives_json_unchanged():
    record = ValidationRecord(
        parity=ParityFigures("cpu", "CPUExecutionProvider", ((1, 5), (8, 32)), Tolerance(1e-4, 1e-4),
                             {"encoder": 2e-6, "model:logits_topic": 0.0}, {"topic": 1.0}, True),
        real_data={"topic": LabelledFigures(12, 0.75, 0.5, 0.5, fp32={"accuracy": 0.8, "macro_f1": 0.6,
                                                                     "macro_recall": 0.6},
                                            drop_points={"accuracy": 5.0, "macro_f1": 10.0, "macro_recall": -1.0},
                                            agreement_with_fp32=0.9)},
        data={"topic": "/data/topic_valid.jsonl"}, status="forced", limits=Int8Limits(1.0, 2.5))
    assert ValidationRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert ValidationRecord.from_dict({}) == ValidationRecord()  # a variant no export checked: nothing recorded
    fp32_only = ValidationRecord(real_data={"topic": LabelledFigures(3, 1, 1, 1)})  # fp32 has no comparison
    assert ValidationRecord.from_dict(fp32_only.to_dict()) == fp32_only

