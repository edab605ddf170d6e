"""Runtime: no torch, the same logits as PyTorch, fused == split, order restored after length sorting, threads,
concurrency, long and bad texts, and every way an export folder can be broken."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mtl.artifacts.manifest import MANIFEST_FILE
from mtl.errors import (
    ConfigError,
    DataError,
    DeviceUnavailableError,
    ManifestError,
    RuntimeLoadError,
)
from mtl.runtime import Predictor
from tests.export_fixtures import ARCHS, MAX_LENGTH, TASKS, copy_export, scratch, tiny_checkpoint, tiny_export

TEXTS = [
    "the movie was great",
    "stocks rally as the bank cuts rates and the market won " * 3,
    "team lost the game",
    "nasa space computer software phone election president minister war peace science " * 10,  # > max length
    "a",
    "love it!",
]


def _load(arch: str = "bert", **kwargs) -> Predictor:
    kwargs.setdefault("threads", 1)
    return Predictor.load(tiny_export(arch), **kwargs)


def test_runtime_imports_neither_torch_nor_transformers():
    code = textwrap.dedent(f"""
        import sys
        from mtl.runtime import Predictor
        predictor = Predictor.load({str(tiny_export("bert"))!r}, threads=1)
        records = predictor.predict(["the movie was great"])
        embeddings = predictor.embed(["the movie was great"])
        split = Predictor.load({str(tiny_export("bert"))!r}, precision="fp32", execution="split", threads=1)
        split.predict(["team won"], ["topic"])
        heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        print(heavy, list(records[0]), embeddings.shape)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] ['topic', 'sentiment'] (1, 32)"


@pytest.mark.parametrize("arch", ARCHS)
def test_runtime_matches_pytorch_on_text(arch):
    from mtl.model import TorchPredictor

    torch_logits = TorchPredictor.load(tiny_checkpoint(arch)).logits(TEXTS)
    onnx_logits = _load(arch, precision="fp32").logits(TEXTS)
    for task in TASKS:
        np.testing.assert_allclose(onnx_logits[task], torch_logits[task], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_fused_and_split_give_the_same_logits(arch, precision):
    fused = _load(arch, precision=precision, execution="fused").logits(TEXTS, batch_size=4)
    split = _load(arch, precision=precision, execution="split").logits(TEXTS, batch_size=4)
    # fp16 heads accumulate in half precision, and the split head runs on one thread where the fused graph's head
    # splits its GEMM across two: the sums differ in the last fp16 bits (seen: 4e-4 on logits of ~0.2).
    tolerance = 2e-3 if precision == "fp16" else 1e-5
    for task in TASKS:
        np.testing.assert_allclose(fused[task], split[task], atol=tolerance, rtol=tolerance)


def test_split_runs_only_the_requested_heads():
    predictor = _load(precision="fp32", execution="split")
    assert list(predictor.logits(TEXTS, ["sentiment"])) == ["sentiment"]
    records = predictor.predict(TEXTS[:2], ["sentiment", "sentiment"])
    assert [list(r) for r in records] == [["sentiment"], ["sentiment"]]


def test_length_sorted_batches_come_back_in_input_order():
    predictor = _load(precision="fp32")
    together = predictor.logits(TEXTS, batch_size=2)
    for i, text in enumerate(TEXTS):
        alone = predictor.logits([text])
        for task in TASKS:
            np.testing.assert_allclose(together[task][i], alone[task][0], atol=1e-5)


def test_predict_records_and_embeddings():
    from mtl.model import MultitaskModel, TorchPredictor

    predictor = _load(precision="fp32")
    record = predictor.predict(["the movie was great"])[0]
    assert set(record) == set(TASKS)
    for task, labels in TASKS.items():
        assert list(record[task]["probabilities"]) == list(labels)
        assert record[task]["label"] in labels
        assert record[task]["score"] == max(record[task]["probabilities"].values())
    torch_predictor = TorchPredictor(MultitaskModel.from_pretrained(tiny_checkpoint("bert")),
                                     TorchPredictor.load(tiny_checkpoint("bert")).tokenizer)
    import torch

    batch = torch_predictor.tokenizer(TEXTS[:3], truncation=True, max_length=MAX_LENGTH, padding=True,
                                      return_tensors="pt")
    with torch.no_grad():
        want = torch_predictor.model.encoder(**dict(batch)).numpy()
    got = predictor.embed(TEXTS[:3])
    assert got.shape == (3, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert predictor.logits([])["topic"].shape == (0, 4)


def test_precision_auto_and_explicit_choices():
    assert _load().precision == "int8"  # auto on CPU
    assert _load(precision="fp16").precision == "fp16"
    fp32_only = tiny_export("bert", ("fp32",), False)
    assert Predictor.load(fp32_only, threads=1).precision == "fp32"
    with pytest.raises(ConfigError, match=r"precision 'int8' was not exported to .* \(present: fp32\)"):
        Predictor.load(fp32_only, precision="int8")


def test_threads_are_set_explicitly():
    predictor = _load(threads=2, precision="fp32", execution="split")
    # the encoder gets the threads asked for; a head (two small matmuls) gets one, so no second pool spins
    for key, threads in (("encoder", 2), ("heads/topic", 1)):
        options = predictor._session(key).session.get_session_options()
        assert options.intra_op_num_threads == threads and options.inter_op_num_threads == 1


def test_concurrent_calls_share_one_predictor():
    predictor = _load(precision="fp32", execution="split")
    texts = [f"{word} the game" for word in ("team", "market", "film", "nasa", "peace", "phone", "bank", "war")]
    expected = [predictor.predict([t])[0] for t in texts]
    results: dict[int, list] = {}
    errors = []

    def worker(index: int) -> None:
        try:
            for _ in range(10):
                mine = texts[index:] + texts[:index]
                got = predictor.predict(mine, batch_size=3)
                assert got == expected[index:] + expected[:index]
            results[index] = predictor.embed([texts[index]]).tolist()
        except Exception as err:  # collected: an assert in a thread would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == len(texts)


def test_a_megabyte_text_is_truncated_quickly_not_refused():
    predictor = _load(precision="fp32")
    huge = "stocks rally as the market won " * 35_000  # ~1 MB
    assert len(huge) > 1_000_000
    started = time.perf_counter()
    logits = predictor.logits([huge])
    assert time.perf_counter() - started < 2.0
    prefix = predictor.logits([huge[:2000]])  # the same first MAX_LENGTH tokens
    np.testing.assert_allclose(logits["topic"], prefix["topic"], atol=1e-6)
    assert len(predictor.text_encoder.encode([huge])[0].ids) == MAX_LENGTH


def test_empty_and_non_string_texts_are_named():
    predictor = _load(precision="fp32")
    with pytest.raises(DataError, match="text 1: empty text"):
        predictor.predict(["fine", "   "])
    with pytest.raises(DataError, match="text 0: expected a string, got NoneType"):
        predictor.predict([None])


def test_unknown_task_precision_device_and_execution():
    predictor = _load(precision="fp32")
    with pytest.raises(ConfigError, match="unknown task 'nope'; valid: topic, sentiment"):
        predictor.predict(["x"], ["nope"])
    with pytest.raises(ConfigError, match="unknown precision 'int4'; valid: auto, fp32, int8, fp16"):
        _load(precision="int4")
    with pytest.raises(ConfigError, match="unknown device 'tpu'; valid: cpu, cuda"):
        _load(device="tpu")
    with pytest.raises(ConfigError, match="unknown execution 'both'; valid: fused, split"):
        _load(execution="both")


def test_cuda_without_cuda_is_a_clear_error_unless_falling_back(monkeypatch):
    import mtl.runtime.session as session

    monkeypatch.setattr(session.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])  # GPU boxes too
    with pytest.raises(DeviceUnavailableError, match="no CUDA execution provider.*--fallback-cpu"):
        _load(device="cuda")
    predictor = _load(device="cuda", fallback_cpu=True)
    assert predictor.device == "cpu" and predictor.precision == "int8"


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs the CUDA EP")
def test_cuda_with_io_binding_matches_cpu():
    cpu = _load(precision="fp32").logits(TEXTS)
    for precision, atol in (("fp32", 1e-3), ("fp16", 3e-2)):
        predictor = _load(device="cuda", precision=precision)
        assert predictor._session("model").session.get_providers()[0] == "CUDAExecutionProvider"
        gpu = predictor.logits(TEXTS)
        for task in TASKS:
            np.testing.assert_allclose(gpu[task], cpu[task], atol=atol, rtol=atol)
    assert _load(device="cuda").precision == "fp16"  # auto on CUDA


# --- broken export folders: one clear error each --------------------------------------------------------------


def test_corrupt_and_truncated_graphs():
    folder = copy_export()
    data = (folder / "model.int8.onnx").read_bytes()
    (folder / "model.int8.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeLoadError, match=r"model.int8.onnx: ONNX Runtime cannot load this graph"):
        Predictor.load(folder, precision="int8")
    (folder / "encoder.onnx").write_bytes(b"not a graph at all")
    with pytest.raises(RuntimeLoadError, match=r"encoder.onnx: ONNX Runtime cannot load this graph"):
        Predictor.load(folder, precision="fp32", execution="split")
    assert Predictor.load(folder, precision="fp32").predict(["fine"])  # the intact fused graph still works


def test_graph_that_does_not_match_the_manifest():
    folder = copy_export()
    (folder / "model.onnx").write_bytes((folder / "encoder.onnx").read_bytes())
    with pytest.raises(RuntimeLoadError, match="do not match the manifest"):
        Predictor.load(folder, precision="fp32")


def _edit_manifest(folder: Path, change) -> None:
    data = json.loads((folder / MANIFEST_FILE).read_text())
    change(data)
    (folder / MANIFEST_FILE).write_text(json.dumps(data))


def test_manifest_problems():
    folder = copy_export()
    _edit_manifest(folder, lambda d: d.update(format_version=2))
    with pytest.raises(ManifestError, match="manifest format version 2 is not supported .*reads version 1"):
        Predictor.load(folder)
    _edit_manifest(folder, lambda d: d.update(format_version=1))
    _edit_manifest(folder, lambda d: d["variants"]["int8"]["files"].update(model="gone.onnx"))
    with pytest.raises(ManifestError, match="names gone.onnx, which is missing"):
        Predictor.load(folder)
    _edit_manifest(folder, lambda d: d["variants"]["int8"]["files"].update(model="../../etc/passwd"))
    with pytest.raises(ManifestError, match="outside the export folder"):
        Predictor.load(folder)
    _edit_manifest(folder, lambda d: d.pop("tasks"))
    with pytest.raises(ManifestError, match="malformed manifest \\(missing key 'tasks'\\)"):
        Predictor.load(folder)
    (folder / MANIFEST_FILE).write_text("{ not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Predictor.load(folder)
    (folder / MANIFEST_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ManifestError, match="not an mtl-onnx export manifest"):
        Predictor.load(folder)
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(ManifestError, match="not an mtl-onnx export folder"):
        Predictor.load(folder)
    with pytest.raises(ManifestError, match="no such export folder"):
        Predictor.load(scratch("empty") / "missing")


def test_missing_or_broken_tokenizer():
    folder = copy_export()
    (folder / "tokenizer.json").write_text("{ broken")
    with pytest.raises(RuntimeLoadError, match="tokenizer.json: not a readable tokenizer"):
        Predictor.load(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ManifestError, match="names tokenizer.json, which is missing"):
        Predictor.load(folder)
