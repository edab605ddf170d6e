"""The engines a bench worker runs, in-process on the tiny model: every mode computes the same logits, the logits
for real text are the ones the predictors give users, PyTorch's dynamically padded pass pads less than per-task
routing's and computes the predictor's logits, PyTorch int8 stays close to fp32, each ORT backend opens its graphs at
its own optimisation level, and one set of ORT graphs is in memory at a time. The peer's tests are in test_peers.py."""

import gc
import weakref

import numpy as np
import onnxruntime as ort
import pytest

from mtl.artifacts.io_spec import ENCODER_GRAPH, FUSED_GRAPH
from mtl.bench.backends import Backend
from mtl.bench.engines import OrtRunner, TorchRunner
from mtl.bench.workloads import Shape, synthetic_inputs
from tests.factory import bench_model

TEXTS = ["Stocks rallied after the central bank cut rates.", "What a game!", "NASA launched a new telescope.",
         "I love this phone, the battery lasts for days and the screen is bright."]
FEEDS = synthetic_inputs(Shape(3, 12), vocab_size=100)


@pytest.fixture(scope="module")
def runners():
    checkpoint, onnx = bench_model()
    torch_runner = TorchRunner(checkpoint, Backend("torch", "fp32", "cpu"), threads=1)
    ort_runner = OrtRunner(onnx, Backend("ort", "fp32-opt", "cpu"), threads=1)
    yield torch_runner, ort_runner
    torch_runner.close()
    ort_runner.close()


def _numpy(logits) -> list[np.ndarray]:
    return [np.asarray(value) for value in logits]


def test_every_mode_of_every_engine_computes_the_same_logits(runners):
    torch_runner, ort_runner = runners
    reference = _numpy(torch_runner.sweep_call("fused", FEEDS)())
    assert [value.shape for value in reference] == [(3, 4), (3, 3)]  # topic, sentiment
    calls = [torch_runner.sweep_call("per-task", FEEDS)] + [
        ort_runner.sweep_call(m, FEEDS) for m in ("per-task", "split")]
    calls.append(ort_runner.sweep_call("fused", FEEDS))
    for call in calls:
        for got, want in zip(_numpy(call()), reference, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_real_text_logits_are_the_predictors(runners):
    """The accuracy check and the cold start measure what `mtl-onnx predict` gives users."""
    from mtl.model import TorchPredictor
    from mtl.runtime import Predictor

    checkpoint, onnx = bench_model()
    torch_runner, ort_runner = runners
    expected = {"torch": TorchPredictor.load(checkpoint).logits(TEXTS),
                "ort": Predictor.load(onnx, precision="fp32", threads=1).logits(TEXTS)}
    for name, runner in (("torch", torch_runner), ("ort", ort_runner)):
        got = runner.logits(TEXTS, batch_size=3)  # batches of unequal length: padding must not leak in
        for task, values in expected[name].items():
            assert got[task].dtype == np.float32
            np.testing.assert_allclose(got[task], values, atol=1e-5, rtol=1e-5)


def test_pytorch_dynamic_pass_pads_less_than_per_task_routing_and_computes_the_predictors_logits(runners):
    from mtl.model import TorchPredictor

    torch_runner, ort_runner = runners
    [per_task] = torch_runner.text_calls("per-task", TEXTS, 3)
    max_length, dynamic = torch_runner.text_calls("fused", TEXTS, 3)
    assert (per_task.padding, max_length.padding, dynamic.padding) == ("max_length", "max_length", "dynamic")
    assert per_task.shapes == max_length.shapes
    tokens = {p.padding: sum(rows * length for rows, length in p.shapes) for p in (max_length, dynamic)}
    assert tokens["dynamic"] < tokens["max_length"]
    [ort_pass] = ort_runner.text_calls("fused", TEXTS, 3)
    assert dynamic.shapes == ort_pass.shapes  # the same batches as ONNX Runtime's: like with like
    expected = TorchPredictor.load(bench_model()[0]).logits(TEXTS)
    got = dynamic.call()
    for task, values in expected.items():
        np.testing.assert_allclose(got[task], values, atol=1e-5, rtol=1e-5)


def test_pytorch_int8_quantises_the_encoders_linear_layers_and_stays_close_to_fp32(runners):
    import torch

    torch_runner, _ = runners
    int8 = TorchRunner(bench_model()[0], Backend("torch", "int8", "cpu"), threads=1)
    model = int8.model.model
    assert not any(type(module) is torch.nn.Linear for module in model.encoder.modules())
    assert all(type(head[0]) is torch.nn.Linear for head in model.heads.values())  # heads stay float, as in ONNX
    assert "int8" in int8.info.provider
    fp32_logits, int8_logits = torch_runner.logits(TEXTS, 2), int8.logits(TEXTS, 2)
    for task, values in fp32_logits.items():
        assert int8_logits[task].dtype == np.float32
        scale = np.abs(values).max()
        assert 0 < np.abs(int8_logits[task] - values).max() < 0.05 * scale  # quantised, and close
    sweep = [np.asarray(v) for v in int8.sweep_call("fused", FEEDS)()]
    for got, want in zip(sweep, _numpy(torch_runner.sweep_call("fused", FEEDS)()), strict=True):
        np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())


@pytest.mark.parametrize("precision, level", [
    ("fp32", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),  # the graph as exported
    ("fp32-opt", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    ("int8", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
])
def test_each_ort_backend_opens_its_graphs_at_its_optimization_level(precision, level):
    runner = OrtRunner(bench_model()[1], Backend("ort", precision, "cpu"), threads=1)
    runner.sweep_call("split", FEEDS)
    assert runner.predictor.session(ENCODER_GRAPH).session.get_session_options().graph_optimization_level == level
    runner.text_calls("fused", TEXTS, 2)
    assert runner.predictor.session(FUSED_GRAPH).session.get_session_options().graph_optimization_level == level
    runner.close()


def test_one_set_of_ort_graphs_is_in_memory_at_a_time():
    """Peak RSS per backend must be one mode's graphs, not every mode's: switching execution lets the last go."""
    runner = OrtRunner(bench_model()[1], Backend("ort", "fp32", "cpu"), threads=1)
    runner.sweep_call("fused", FEEDS)
    fused = weakref.ref(runner.predictor)
    runner.text_calls("fused", TEXTS, 2)
    assert runner.predictor is fused()  # the same execution reuses what is loaded
    runner.sweep_call("per-task", FEEDS)
    gc.collect()
    assert fused() is None and runner.predictor.execution == "split"
    split = weakref.ref(runner.predictor)
    runner.close()
    gc.collect()
    assert split() is None
