"""Export: every architecture exports and validates against PyTorch, axes stay dynamic, variants and their
checks, the real MiniLM with int8 judged on the bundled demo data, Optimum compatibility, and export failures
that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mtl.artifacts.io_spec import BATCH_AXIS, EMBEDDING, SEQUENCE_AXIS, encoder_spec, logits_name, token_inputs
from mtl.artifacts.manifest import load_manifest
from mtl.errors import CheckpointError, ConfigError, DataError, ExportError, ExportValidationError
from mtl.export import ExportOptions, export_checkpoint, parse_precisions
from mtl.export.accuracy import int8_problems
from mtl.model import MultitaskModel
from tests.export_fixtures import (
    ARCHS,
    MAX_LENGTH,
    TASKS,
    minilm_export,
    scratch,
    tiny_checkpoint,
    tiny_export,
)

torch.set_num_threads(1)
EXPECTED_INPUTS = {
    "bert": ["input_ids", "attention_mask", "token_type_ids"],
    "roberta": ["input_ids", "attention_mask"],
    "distilbert": ["input_ids", "attention_mask"],
    "deberta-v2": ["input_ids", "attention_mask"],  # type_vocab_size 0: token types are ignored, so not an input
}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_io_spec_orders_inputs_and_rejects_unknown_ones():
    assert [t.name for t in token_inputs(["attention_mask", "input_ids"])] == ["input_ids", "attention_mask"]
    spec = encoder_spec(["input_ids", "token_type_ids", "attention_mask"], 32)
    assert spec.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert spec.dynamic_axes()[EMBEDDING] == {0: BATCH_AXIS}
    with pytest.raises(ConfigError, match="unknown encoder input 'position_ids'"):
        token_inputs(["input_ids", "attention_mask", "position_ids"])
    with pytest.raises(ConfigError, match="attention_mask"):
        token_inputs(["input_ids"])


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_exports_and_validates(arch):
    folder = tiny_export(arch)
    manifest = load_manifest(folder)
    assert list(manifest.input_names) == EXPECTED_INPUTS[arch]
    assert set(manifest.variants) == {"fp32", "int8", "fp16"}
    for precision, variant in manifest.variants.items():
        validation = variant.validation
        assert validation["passed"], precision
        assert [1, MAX_LENGTH] in validation["cases"] and [8, 5] in validation["cases"]
        if precision == "fp32":
            assert max(validation["max_abs_diff"].values()) <= 1e-4
            assert validation["tolerance"] == {"atol": 1e-4, "rtol": 1e-4}
    # Each graph declares the spec's names with symbolic (not specialised) axes.
    for path, spec in [("encoder.onnx", manifest.encoder), ("model.onnx", manifest.fused),
                       ("heads/topic.onnx", manifest.heads["topic"])]:
        graph = onnx.load(str(folder / path)).graph
        assert [i.name for i in graph.input] == spec.input_names
        assert [o.name for o in graph.output] == spec.output_names
        for value in list(graph.input) + list(graph.output):
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            assert dims[0] == BATCH_AXIS, (path, value.name, dims)
            if value.name in EXPECTED_INPUTS[arch]:
                assert dims[1] == SEQUENCE_AXIS
    assert manifest.fused.output_names == [logits_name(t) for t in TASKS]


@pytest.mark.parametrize("arch", ARCHS)
def test_dynamic_axes_accept_shapes_never_seen(arch):
    """Batch 5 x sequence 23 (and 3 x 2): neither the export's example nor a validation case."""
    folder = tiny_export(arch)
    model = MultitaskModel.from_pretrained(tiny_checkpoint(arch))
    names = EXPECTED_INPUTS[arch]
    rng = np.random.default_rng(7)
    for batch, seq in ((5, 23), (3, 2)):
        ids = rng.integers(5, 100, size=(batch, seq), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[1:, seq // 2 + 1:] = 0
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        feeds = {n: feeds[n] for n in names}
        with torch.no_grad():
            want = model.logits_by_task(**{n: torch.from_numpy(v) for n, v in feeds.items()})
            pooled = model.encoder(**{n: torch.from_numpy(v) for n, v in feeds.items()}).numpy()
        got = _session(folder / "model.onnx").run(None, feeds)
        for task, logits in zip(TASKS, got):
            np.testing.assert_allclose(logits, want[task].numpy(), atol=1e-4, rtol=1e-4)
        embedding = _session(folder / "encoder.onnx").run(None, feeds)[0]
        np.testing.assert_allclose(embedding, pooled, atol=1e-4, rtol=1e-4)


def test_mean_pooling_exports_with_pooling_inside_the_graph():
    folder = tiny_export("bert", ("fp32",), False, "mean")
    manifest = load_manifest(folder)
    assert manifest.pooling == "mean"
    assert manifest.variants["fp32"].validation["passed"]


def test_optimize_measures_and_records_its_decision():
    optimization = load_manifest(tiny_export("bert")).variants["fp32"].settings["optimization"]
    for graph in ("encoder", "model"):
        record = optimization[graph]
        assert record["fused_operators"].get("Attention") == 2  # the BERT fusions matched
        assert record["max_abs_diff"] <= 1e-4
        assert record["kept"] == (record["ms_after"] < record["ms_before"])
        assert record["reason"] in ("faster", "not faster")


def test_int8_and_fp16_files_and_settings():
    folder = tiny_export("bert")
    manifest = load_manifest(folder)
    int8, fp16 = manifest.variants["int8"], manifest.variants["fp16"]
    assert int8.files.model == "model.int8.onnx" and int8.device == "cpu"
    assert int8.files.heads == manifest.variants["fp32"].files.heads  # heads stay float (see quantize_int8)
    assert int8.settings["quantization"]["per_channel"] is True
    assert int8.settings["quantization"]["target"] in ("avx512_vnni", "avx2", "arm64")
    ops = {n.op_type for n in onnx.load(str(folder / int8.files.model)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert fp16.device == "cuda" and fp16.validation["tolerance"]["atol"] <= 2e-2
    session = _session(folder / fp16.files.model)
    assert {i.type for i in session.get_outputs()} == {"tensor(float)"}  # float32 out of an fp16 graph
    assert (folder / "tokenizer.json").is_file() and (folder / "config.json").is_file()
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert tokenizer["truncation"]["max_length"] == MAX_LENGTH and tokenizer["padding"]["direction"] == "Right"
    assert {"torch", "onnxruntime", "onnx", "transformers"} <= set(manifest.versions)


@pytest.mark.slow
def test_real_minilm_exports_and_int8_agrees_on_the_demo_data():
    folder, result = minilm_export()
    manifest = load_manifest(folder)
    fp32, int8 = manifest.variants["fp32"], manifest.variants["int8"]
    assert list(manifest.input_names) == EXPECTED_INPUTS["bert"] and manifest.max_length == 128
    assert max(fp32.validation["max_abs_diff"].values()) <= 1e-4
    assert [8, 128] in fp32.validation["cases"]
    for task in ("topic", "sentiment"):
        real = int8.validation["real_data"][task]
        assert real["examples"] == 250
        assert real["agreement_with_fp32"] >= 0.9, real
        assert real["drop_points"] <= 3.0, real
        assert fp32.validation["real_data"][task]["accuracy"] > 1 / len(manifest.labels(task)) + 0.1  # not chance
    assert int8.validation["accepted"] == "within limit"
    sizes = {(row.graph, row.precision): row.size_bytes for row in result.rows}
    assert sizes[("model", "int8")] < 0.35 * sizes[("model", "fp32")]


@pytest.mark.slow
def test_optimum_loads_the_export_folder():
    from optimum.onnxruntime import ORTModelForCustomTasks
    from transformers import AutoTokenizer

    from mtl.runtime import Predictor

    folder, _ = minilm_export()
    texts = ["Stocks rallied after the central bank cut rates.", "What a match!"]
    model = ORTModelForCustomTasks.from_pretrained(folder)  # picks model.onnx; needs config.json
    encoded = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="np")
    outputs = model(**{k: encoded[k] for k in load_manifest(folder).input_names})
    ours = Predictor.load(folder, precision="fp32", threads=1).logits(texts)
    for task in ("topic", "sentiment"):
        np.testing.assert_allclose(outputs[logits_name(task)], ours[task], atol=1e-4, rtol=1e-4)


def test_precisions_parse_and_always_include_fp32():
    assert parse_precisions("int8") == ("fp32", "int8")
    assert parse_precisions("fp16, fp32,int8") == ("fp32", "int8", "fp16")
    with pytest.raises(ConfigError, match="unknown precision 'int4'; valid: fp32, int8, fp16"):
        parse_precisions("fp32,int4")


def test_int8_problems_name_each_task_over_the_limit():
    report = {"a": {"accuracy": {"fp32": 0.9, "int8": 0.88}, "drop_points": {"int8": 2.0}},
              "b": {"accuracy": {"fp32": 0.9, "int8": 0.9}, "drop_points": {"int8": 0.0}}}
    problems = int8_problems(report, 1.0)
    assert len(problems) == 1 and "task a" in problems[0] and "2.00 points" in problems[0]
    assert int8_problems(report, 2.0) == []


def _labelled_file(folder: Path, task: str = "topic") -> Path:
    path = folder / f"{task}.jsonl"
    texts = ["stocks market rally", "team won the game", "war and peace", "nasa space computer"] * 5
    labels = TASKS[task] * 5 if task == "topic" else ["negative", "neutral", "positive", "neutral"] * 5
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    return path


def test_int8_refused_when_it_loses_accuracy_unless_forced(monkeypatch):
    import mtl.export.pipeline as pipeline

    real_report = pipeline.accuracy_report

    def losing_report(*args, **kwargs):
        report = real_report(*args, **kwargs)
        report["topic"]["accuracy"]["int8"] = report["topic"]["accuracy"]["fp32"] - 0.05
        report["topic"]["drop_points"]["int8"] = 5.0
        return report

    monkeypatch.setattr(pipeline, "accuracy_report", losing_report)
    parent = scratch("refused")
    data = {"topic": _labelled_file(parent)}
    options = ExportOptions(precisions=("fp32", "int8"), validation_data=data, threads=1)
    with pytest.raises(ExportValidationError, match=r"task topic: .*5.00 points lost; limit 1"):
        export_checkpoint(tiny_checkpoint("bert"), parent / "out", options)
    assert sorted(p.name for p in parent.iterdir()) == ["topic.jsonl"]  # no output, no staging left
    forced = ExportOptions(precisions=("fp32", "int8"), validation_data=data, threads=1, force_int8=True)
    result = export_checkpoint(tiny_checkpoint("bert"), parent / "out", forced)
    validation = result.manifest.variants["int8"].validation
    assert validation["accepted"] == "forced" and validation["real_data"]["topic"]["drop_points"] == 5.0


def test_every_mismatch_is_collected_into_one_error(monkeypatch):
    import mtl.export.pipeline as pipeline

    real_references = pipeline.torch_references

    def shifted(*args, **kwargs):
        references = real_references(*args, **kwargs)
        for ref in references:
            ref.embedding = ref.embedding + 1.0
            ref.logits = {t: v + 1.0 for t, v in ref.logits.items()}
        return references

    monkeypatch.setattr(pipeline, "torch_references", shifted)
    parent = scratch("mismatch")
    with pytest.raises(ExportValidationError) as caught:
        export_checkpoint(tiny_checkpoint("roberta"), parent / "out", ExportOptions(threads=1))
    message = str(caught.value)
    # 9 cases x (encoder + 2 heads + 2 fused outputs)
    assert message.startswith("45 output(s) of the exported graphs do not match PyTorch")
    assert "encoder.onnx sentence_embedding batch=1 seq=5: max |diff| 1" in message and "heads/topic.onnx" in message
    assert message.endswith("... and 5 more")
    assert list(parent.iterdir()) == []


def test_output_folder_rules():
    parent = scratch("rules")
    foreign = parent / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="holds no mtl-onnx export"):
        export_checkpoint(tiny_checkpoint("distilbert"), foreign, ExportOptions(threads=1))
    out = parent / "out"
    export_checkpoint(tiny_checkpoint("distilbert"), out, ExportOptions(threads=1))
    with pytest.raises(ExportError, match="already holds an mtl-onnx export; pass --overwrite"):
        export_checkpoint(tiny_checkpoint("distilbert"), out, ExportOptions(threads=1))
    before = (out / "manifest.json").stat().st_mtime_ns
    export_checkpoint(tiny_checkpoint("distilbert"), out, ExportOptions(threads=1, overwrite=True))
    assert (out / "manifest.json").stat().st_mtime_ns != before
    assert sorted(p.name for p in parent.iterdir()) == ["foreign", "out"]


def test_bad_checkpoints_and_validation_data_fail_before_any_work():
    parent = scratch("bad")
    with pytest.raises(CheckpointError, match="not a complete mtl-onnx checkpoint"):
        export_checkpoint(parent, parent / "out")
    broken = scratch("broken-ckpt")
    for path in tiny_checkpoint("bert").rglob("*"):
        if path.is_file():
            target = broken / path.relative_to(tiny_checkpoint("bert"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors: cannot load the weights"):
        export_checkpoint(broken, parent / "out")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        export_checkpoint(tiny_checkpoint("bert"), parent / "out",
                          ExportOptions(validation_data={"nope": _labelled_file(parent)}))
    bad_labels = _labelled_file(parent, "sentiment")
    with pytest.raises(DataError, match="is not one of the training labels"):
        export_checkpoint(tiny_checkpoint("bert"), parent / "out", ExportOptions(validation_data={"topic": bad_labels}))
    with pytest.raises(ConfigError, match="opset 9 is not supported"):
        export_checkpoint(tiny_checkpoint("bert"), parent / "out", ExportOptions(opset=9))
    assert not (parent / "out").exists()
