"""The peer, in-process on the tiny model: sentence-transformers' ONNX backend built from the checkpoint's encoder,
with the checkpoint's heads in numpy, gives PyTorch fp32's logits and labels; its int8 export stays close; the
batches it reports are the ones its `encode` runs; and a failing export is one line naming the step."""

import numpy as np
import pytest

from mtl.bench.backends import Backend, peer_available
from mtl.bench.engines import TorchRunner
from mtl.bench.peers import PeerRunner, quantization_preset
from mtl.bench.workloads import Shape, synthetic_inputs
from mtl.errors import BenchError
from tests.factory import bench_model

pytestmark = pytest.mark.skipif(not peer_available(), reason="the peer extra is not installed")

TEXTS = ["Stocks rallied after the central bank cut rates.", "What a game!", "NASA launched a new telescope.",
         "I love this phone, the battery lasts for days and the screen is bright.", "Rain again."]
FEEDS = synthetic_inputs(Shape(3, 12), vocab_size=100)


@pytest.fixture(scope="module")
def torch_fp32():
    runner = TorchRunner(bench_model()[0], Backend("torch", "fp32", "cpu"), threads=1)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def peer_fp32():
    runner = PeerRunner(bench_model()[0], Backend("st", "fp32", "cpu"), threads=1)
    yield runner
    runner.close()


def test_fp32_peer_gives_pytorch_fp32s_logits_and_labels(peer_fp32, torch_fp32):
    expected = torch_fp32.logits(TEXTS, 2)
    got = peer_fp32.logits(TEXTS, 2)
    for task, values in expected.items():
        assert got[task].dtype == np.float32 and got[task].shape == values.shape
        np.testing.assert_allclose(got[task], values, atol=1e-5, rtol=1e-5)
        assert (got[task].argmax(-1) == values.argmax(-1)).all()
    sweep = peer_fp32.sweep_call("fused", FEEDS)()  # its module pipeline on fixed token ids
    for got_values, want in zip(sweep, torch_fp32.sweep_call("fused", FEEDS)(), strict=True):
        np.testing.assert_allclose(got_values, want.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch, pooling", [("bert", "mean"), ("distilbert", "cls")])
def test_the_peer_pools_and_reads_weights_as_the_checkpoint_does(arch, pooling):
    """Mean pooling, and an encoder whose config names its width "dim" and that takes no token_type_ids."""
    from tests.factory import TINY

    checkpoint = TINY.checkpoint(arch, pooling)
    peer, reference = PeerRunner(checkpoint, Backend("st", "fp32", "cpu"), 1), TorchRunner(
        checkpoint, Backend("torch", "fp32", "cpu"), 1)
    try:
        expected, got = reference.logits(TEXTS, 2), peer.logits(TEXTS, 2)
        for task, values in expected.items():
            np.testing.assert_allclose(got[task], values, atol=1e-5, rtol=1e-5)
    finally:
        peer.close()


def test_the_peers_text_pass_reports_the_batches_its_encode_runs(peer_fp32, monkeypatch):
    [text_pass] = peer_fp32.text_calls("fused", TEXTS, 2)
    assert text_pass.padding == "dynamic"
    seen, forward = [], peer_fp32.model.forward

    def spy(features, **kwargs):
        seen.append(list(features["input_ids"].shape))
        return forward(features, **kwargs)

    monkeypatch.setattr(peer_fp32.model, "forward", spy)
    logits = text_pass.call()
    assert seen == text_pass.shapes and set(logits) == {"topic", "sentiment"}
    assert peer_fp32.artifact_bytes("fused") == (peer_fp32.folder / "onnx" / "model.onnx").stat().st_size


def test_int8_peer_is_its_quantised_export_and_stays_close(peer_fp32):
    int8 = PeerRunner(bench_model()[0], Backend("st", "int8", "cpu"), threads=1)
    try:
        assert int8.onnx_file.name.startswith("model_qint8_") and "preset" in int8.info.provider
        assert int8.artifact_bytes("fused") < peer_fp32.artifact_bytes("fused")
        fp32_logits, int8_logits = peer_fp32.logits(TEXTS, 2), int8.logits(TEXTS, 2)
        for task, values in fp32_logits.items():
            assert 0 < np.abs(int8_logits[task] - values).max() < 0.05 * np.abs(values).max()
    finally:
        int8.close()
    assert not int8.folder.exists()  # the assembled folder and its exports go with the runner


def test_a_failing_int8_export_is_one_line_naming_the_step(monkeypatch):
    import sentence_transformers.backend

    def fail(*args, **kwargs):
        raise ValueError("Unable to find data type for weight_name='x'\nmore detail")

    monkeypatch.setattr(sentence_transformers.backend, "export_dynamic_quantized_onnx_model", fail)
    with pytest.raises(BenchError) as caught:
        PeerRunner(bench_model()[0], Backend("st", "int8", "cpu"), threads=1)
    message = str(caught.value)
    assert "int8 export" in message and "ValueError: Unable to find data type" in message and "\n" not in message


@pytest.mark.parametrize("flags, architecture, preset", [
    (["avx2", "avx512f", "avx512_vnni"], "x86_64", "avx512_vnni"),
    (["avx2", "avx512f"], "x86_64", "avx512"),
    (["avx2"], "x86_64", "avx2"),
    (["asimd"], "aarch64", "arm64"),
])
def test_the_int8_preset_matches_the_cpu(flags, architecture, preset):
    assert quantization_preset(flags, architecture) == preset
