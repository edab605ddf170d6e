"""Triton model repository: the config parses into Triton's own ModelConfig and agrees with the ONNX graph, the
label files are the manifest's, the copied fused graph runs a batch fed the way Triton feeds it, a damaged config
is caught, and the folder is written whole or not at all."""

from __future__ import annotations

import filecmp
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2  # the `triton` extra, part of `test`

from mtl.artifacts.io_spec import logits_name
from mtl.artifacts.manifest import MANIFEST_FILE, load_manifest
from mtl.errors import ConfigError, ExportError, ManifestError, MissingDependencyError, TritonConfigError, UserError
from mtl.export.triton import CONFIG_FILE, validate_triton_model, write_triton_repository
from mtl.runtime import Predictor
from tests.factory import TASKS

TEXTS = ["the movie was great", "stocks rally as the bank cuts rates", "team lost the game"]
NUMPY_TYPES = {"TYPE_INT64": np.int64, "TYPE_FP32": np.float32}
ONNX_TYPES = {"TYPE_INT64": onnx.TensorProto.INT64, "TYPE_FP32": onnx.TensorProto.FLOAT}


def _parse(model_dir: Path):
    return text_format.Parse((model_dir / CONFIG_FILE).read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def _write(tiny, arch: str = "bert", **kwargs) -> Path:
    return write_triton_repository(tiny.export(arch), tiny.scratch("triton") / "models", **kwargs)


@pytest.mark.parametrize("arch", ["bert", "roberta"])  # roberta's graphs take no token_type_ids
def test_config_matches_manifest_and_onnx_graph(tiny, arch):
    export = tiny.export(arch)
    manifest = load_manifest(export)
    model_dir = _write(tiny, arch, model_name="classifier", max_batch_size=16)
    config = _parse(model_dir)
    dtype = model_config_pb2.DataType.Name

    assert model_dir.name == config.name == "classifier"
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime" and config.max_batch_size == 16
    assert config.default_model_filename == "model.onnx"
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds > 0
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == ["KIND_CPU"]
    assert [t.name for t in config.input] == list(manifest.model.input_names) == manifest.fused.input_names
    assert all(dtype(t.data_type) == "TYPE_INT64" and list(t.dims) == [-1] for t in config.input)
    assert [t.name for t in config.output] == [logits_name(t) for t in TASKS]
    for tensor, (task, labels) in zip(config.output, TASKS.items(), strict=True):
        assert dtype(tensor.data_type) == "TYPE_FP32" and list(tensor.dims) == [len(labels)]
        assert (model_dir / tensor.label_filename).read_text(encoding="utf-8").splitlines() == list(labels)
        assert manifest.labels(task) == labels

    # The copied graph is the export's fused fp32 graph, and Triton's view of it (batch axis added) is its own.
    model = model_dir / "1" / "model.onnx"
    assert filecmp.cmp(model, export / manifest.variants["fp32"].files.model, shallow=False)
    graph = onnx.load(str(model)).graph
    values = {v.name: v for v in [*graph.input, *graph.output]}
    assert [v.name for v in graph.input] == [t.name for t in config.input]
    for tensor in [*config.input, *config.output]:
        value = values[tensor.name].type.tensor_type
        assert value.elem_type == ONNX_TYPES[dtype(tensor.data_type)]
        assert len(value.shape.dim) == 1 + len(tensor.dims)
        assert value.shape.dim[0].dim_param  # the batch axis is dynamic
    validate_triton_model(model_dir)


def test_repository_graph_runs_a_batch_as_triton_feeds_it(tiny):
    """What Triton hands ONNX Runtime: the config's input names and dtypes, (batch, seq) arrays; the outputs it
    reads back by the config's names must be (batch, n_labels) and the runtime's own logits."""
    model_dir = _write(tiny, "bert")
    config = _parse(model_dir)
    predictor = Predictor.load(tiny.export("bert"), precision="fp32", threads=1)
    encodings = predictor.text_encoder.encode(TEXTS)
    arrays = predictor.text_encoder.arrays(encodings, list(predictor.manifest.model.input_names))
    dtype = model_config_pb2.DataType.Name
    feeds = {t.name: arrays[t.name].astype(NUMPY_TYPES[dtype(t.data_type)]) for t in config.input}
    assert all(a.shape == (len(TEXTS), feeds["input_ids"].shape[1]) for a in feeds.values())

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    outputs = session.run([t.name for t in config.output], feeds)
    expected = predictor.logits(TEXTS)
    for tensor, values, task in zip(config.output, outputs, TASKS, strict=True):
        assert values.dtype == NUMPY_TYPES[dtype(tensor.data_type)]
        assert values.shape == (len(TEXTS), *tensor.dims)
        np.testing.assert_allclose(values, expected[task], atol=1e-5)


def test_gpu_config_uses_the_fp16_graph_with_float32_io(tiny):
    model_dir = _write(tiny, "bert", device="gpu", precision="fp16")
    config = _parse(model_dir)
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == ["KIND_GPU"]
    manifest = load_manifest(tiny.export("bert"))
    assert filecmp.cmp(model_dir / "1" / "model.onnx", tiny.export("bert") / manifest.variants["fp16"].files.model,
                       shallow=False)
    assert {model_config_pb2.DataType.Name(t.data_type) for t in config.output} == {"TYPE_FP32"}


def _tensor(tensors, name: str):
    return next(t for t in tensors if t.name == name)


def _rewrite_config(model_dir: Path, damage) -> None:
    """Damage the written config as a message and write it back, so that only the named change differs."""
    config = _parse(model_dir)
    damage(config)
    (model_dir / CONFIG_FILE).write_text(text_format.MessageToString(config), encoding="utf-8")


def _damage_input_name(config):
    _tensor(config.input, "attention_mask").name = "mask"


def _damage_dtype(config):
    _tensor(config.input, "input_ids").data_type = model_config_pb2.TYPE_INT32


def _damage_input_dims(config):
    _tensor(config.input, "input_ids").dims.append(-1)


def _damage_output_dims(config):
    _tensor(config.output, "topic_logits").dims[:] = [5]


def _damage_name(config):
    config.name = "other"


def _damage_platform(config):
    config.platform = "tensorflow_savedmodel"


def _damage_backend(config):
    config.backend = "pytorch"


def _drop_input(config):
    config.input.remove(_tensor(config.input, "token_type_ids"))


def _drop_label_file(config):
    _tensor(config.output, "sentiment_logits").label_filename = "missing.txt"


@pytest.mark.parametrize("damage, message", [
    (_damage_input_name, "input 'mask' is not in the graph"),
    (_damage_dtype, "is TYPE_INT32 in the config, TYPE_INT64 in the graph"),
    (_damage_input_dims, "has rank 2 in the graph"),
    (_damage_output_dims, "has dims [5] in the config"),
    (_damage_name, "is not the folder's name"),
    (_damage_platform, "expected platform 'onnxruntime_onnx'"),
    (_damage_backend, "backend 'pytorch': expected"),
    (_drop_input, "graph input 'token_type_ids' is not in the config"),
    (_drop_label_file, "label file missing.txt is missing"),
])
def test_validator_catches_a_damaged_config(tiny, damage, message):
    model_dir = _write(tiny, "bert")
    _rewrite_config(model_dir, damage)
    with pytest.raises(TritonConfigError) as caught:
        validate_triton_model(model_dir)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_validator_catches_a_config_that_does_not_parse(tiny):
    model_dir = _write(tiny, "bert")
    path = model_dir / CONFIG_FILE
    path.write_text(path.read_text(encoding="utf-8").replace("TYPE_INT64", "TYPE_LONG", 1), encoding="utf-8")
    with pytest.raises(TritonConfigError, match="not a valid Triton model config"):
        validate_triton_model(model_dir)


def test_validator_lists_every_problem_and_checks_labels(tiny):
    model_dir = _write(tiny, "bert")
    _rewrite_config(model_dir, lambda config: (_damage_dtype(config), _damage_output_dims(config)))
    (model_dir / "sentiment_labels.txt").write_text("negative\npositive\n", encoding="utf-8")
    with pytest.raises(TritonConfigError, match="4 problem") as caught:
        validate_triton_model(model_dir)
    for problem in ("'input_ids' is TYPE_INT32 in the config", "'topic_logits' has dims [5] in the config",
                    "topic_labels.txt has 4 label(s) for 5 class(es)",
                    "sentiment_labels.txt has 2 label(s) for 3 class(es)"):
        assert problem in str(caught.value)


def test_validator_catches_a_graph_that_is_not_the_configs(tiny):
    model_dir = _write(tiny, "bert")
    roberta = load_manifest(tiny.export("roberta")).variants["fp32"].files.model
    (model_dir / "1" / "model.onnx").write_bytes((tiny.export("roberta") / roberta).read_bytes())
    with pytest.raises(TritonConfigError, match="input 'token_type_ids' is not in the graph"):
        validate_triton_model(model_dir)
    (model_dir / "1" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(TritonConfigError, match="cannot be read as ONNX"):
        validate_triton_model(model_dir)


def test_missing_tritonclient_is_one_line_naming_the_extra(tiny, monkeypatch):
    """The config is built as Triton's own protobuf message, so writing (not only checking) needs the extra."""
    root = tiny.scratch("triton-missing")
    model_dir = write_triton_repository(tiny.export("bert"), root / "models")
    before = (model_dir / CONFIG_FILE).read_text(encoding="utf-8")
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # import now raises ImportError
    for target, overwrite in ((root / "new", False), (root / "models", True)):
        with pytest.raises(MissingDependencyError) as caught:
            write_triton_repository(tiny.export("bert"), target, max_batch_size=8, overwrite=overwrite)
        message = str(caught.value)
        assert isinstance(caught.value, UserError) and "\n" not in message
        assert "pip install 'mtl-onnx[triton]'" in message
    assert (model_dir / CONFIG_FILE).read_text(encoding="utf-8") == before
    assert sorted(p.name for p in root.iterdir()) == ["models"]  # nothing written, not even the new repository


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "bf16"}, "unknown precision 'bf16'"),
    ({"device": "tpu"}, "unknown Triton device 'tpu'; valid: cpu, gpu"),
    ({"max_batch_size": 0}, "max_batch_size must be at least 1"),
    ({"model_name": "../escape"}, "invalid Triton model name"),
])
def test_bad_options_are_refused_before_writing(tiny, kwargs, message):
    target = tiny.scratch("triton-bad") / "models"
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        write_triton_repository(tiny.export("bert"), target, **kwargs)
    assert not target.exists()


def _failing_check(seen: list[Path], error: BaseException):
    def check(folder: Path) -> None:
        seen.append(folder)
        assert _parse(folder).name == folder.name  # checked under the model's own name, as Triton would
        raise error

    return check


@pytest.mark.parametrize("error", [TritonConfigError("injected"), KeyboardInterrupt()])
def test_written_whole_or_not_at_all(tiny, monkeypatch, error):
    root = tiny.scratch("triton-atomic")
    target = root / "models"
    model_dir = write_triton_repository(tiny.export("bert"), target)
    before = (model_dir / CONFIG_FILE).read_text(encoding="utf-8")
    with pytest.raises(ExportError, match="pass --overwrite"):
        write_triton_repository(tiny.export("bert"), target, max_batch_size=8)

    import mtl.export.triton as triton

    seen = []
    monkeypatch.setattr(triton, "validate_triton_model", _failing_check(seen, error))
    with pytest.raises(type(error)):
        write_triton_repository(tiny.export("bert"), target, max_batch_size=8, overwrite=True)
    assert (model_dir / CONFIG_FILE).read_text(encoding="utf-8") == before
    # Staged beside the repository, where Triton's polling of the repository cannot see it; and then removed.
    assert seen[0].parent.parent == root and not seen[0].exists()
    assert sorted(p.name for p in root.iterdir()) == ["models"]
    monkeypatch.undo()

    write_triton_repository(tiny.export("bert"), target, max_batch_size=8, overwrite=True)
    assert _parse(model_dir).max_batch_size == 8
    assert sorted(p.name for p in root.iterdir()) == ["models"]  # no staging folder left behind
    assert sorted(p.name for p in target.iterdir()) == ["mtl"]


def test_staged_inside_a_repository_whose_parent_cannot_hold_it(tiny, monkeypatch):
    """A repository that is a mount point (a container volume) has its parent on another file system, or one the
    user cannot write: the model is then staged inside the repository, and still leaves nothing behind."""
    import mtl.export.triton as triton

    root = tiny.scratch("triton-mount")
    target = root / "models"
    write_triton_repository(tiny.export("bert"), target)
    access = triton.os.access
    monkeypatch.setattr(triton.os, "access", lambda path, mode: Path(path) != root.resolve() and access(path, mode))
    seen = []
    monkeypatch.setattr(triton, "validate_triton_model", _failing_check(seen, TritonConfigError("injected")))
    with pytest.raises(TritonConfigError):
        write_triton_repository(tiny.export("bert"), target, overwrite=True)
    assert seen[0].parent.parent == target
    assert sorted(p.name for p in target.iterdir()) == ["mtl"]


def test_refuses_to_replace_what_is_not_a_triton_model(tiny):
    root = tiny.scratch("triton-foreign")
    (root / "models" / "mtl").mkdir(parents=True)
    (root / "models" / "mtl" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ExportError, match="holds no mtl-onnx Triton model"):
        write_triton_repository(tiny.export("bert"), root / "models", overwrite=True)
    assert [p.name for p in (root / "models" / "mtl").iterdir()] == ["notes.txt"]
    (root / "file").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match="not a folder"):
        write_triton_repository(tiny.export("bert"), root / "file")
    assert sorted(p.name for p in root.iterdir()) == ["file", "models"]


def test_a_label_with_a_line_break_is_refused_before_writing(tiny):
    export = tiny.copy_export("bert")
    manifest = json.loads((export / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["model"]["tasks"][1]["labels"][1] = "neu\ntral"
    (export / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    target = tiny.scratch("triton-labels") / "models"
    # Triton's label files hold one label a line; the manifest's loader already refuses a control character.
    with pytest.raises(ManifestError, match=r"label 'neu\\ntral' holds the control character U\+000A"):
        write_triton_repository(export, target)
    assert not target.exists()
