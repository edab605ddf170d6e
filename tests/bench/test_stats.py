"""The bench's arithmetic and choices, without any model: percentiles, speed-up pairing, FLOPs, the timing loop,
accuracy rows and backend resolution."""

import statistics

import numpy as np
import pytest

from mtl.bench.backends import Backend, parse_backends, parse_precisions, resolve_backends
from mtl.bench.harness import accuracy_rows
from mtl.bench.records import Measurement, Row
from mtl.bench.stats import (
    P99_MIN_RUNS,
    EncoderDims,
    add_speedups,
    batches_flops,
    call_flops,
    encoder_flops,
    latency_summary,
    tail_latency,
)
from mtl.bench.worker import time_calls
from mtl.errors import BenchError, ConfigError

BERT_BASE = EncoderDims(hidden=768, layers=12, intermediate=3072, max_positions=512, vocab_size=30522)


@pytest.mark.parametrize("runs", [1, 2, 3, 10, 101, 1000])
def test_latency_summary_matches_numpy_on_random_latencies(runs):
    rng = np.random.default_rng(runs)
    latencies = rng.lognormal(mean=-4.0, sigma=0.6, size=runs).tolist()  # long right tail, as timings have
    rng.shuffle(latencies)  # nothing may depend on the order the calls came in
    summary = latency_summary(latencies, items_per_call=8)
    assert summary.p50_s == pytest.approx(np.percentile(latencies, 50)) == pytest.approx(np.median(latencies))
    assert summary.p90_s == pytest.approx(np.percentile(latencies, 90))
    assert summary.p99_s == pytest.approx(np.percentile(latencies, 99))
    assert summary.mean_s == pytest.approx(np.mean(latencies))
    assert summary.std_s == pytest.approx(statistics.pstdev(latencies), abs=1e-12)
    assert summary.min_s == min(latencies) and summary.runs == runs
    assert summary.min_s <= summary.p50_s <= summary.p90_s <= summary.p99_s <= max(latencies)
    assert summary.throughput_per_s == pytest.approx(8 / np.mean(latencies))


def test_percentiles_of_one_hundred_and_one_runs_are_the_ranked_values():
    latencies = np.random.default_rng(7).permutation(np.arange(1, 102) / 1000).tolist()  # 1 ms .. 101 ms
    summary = latency_summary(latencies, items_per_call=1)
    assert (summary.p50_s, summary.p90_s, summary.p99_s) == pytest.approx((0.051, 0.091, 0.100))


def test_latency_summary_needs_data():
    with pytest.raises(ValueError):
        latency_summary([], 1)


def test_encoder_flops_of_bert_base_at_128_tokens():
    # BERT-base has 85M parameters in its layers: 2 FLOPs per parameter per token, plus attention over 128 tokens
    assert encoder_flops(BERT_BASE, 1, 128) == pytest.approx(22.35e9, rel=1e-3)
    assert encoder_flops(BERT_BASE, 4, 128) == 4 * encoder_flops(BERT_BASE, 1, 128)  # linear in batch
    # attention is quadratic in the sequence: doubling it costs more than twice
    assert encoder_flops(BERT_BASE, 1, 256) > 2 * encoder_flops(BERT_BASE, 1, 128)


def test_call_flops_counts_one_encoder_pass_per_task_for_per_task_routing():
    labels = [4, 3, 2]
    encoder = encoder_flops(BERT_BASE, 8, 64)
    fused = call_flops(BERT_BASE, labels, 8, 64, "fused")
    assert call_flops(BERT_BASE, labels, 8, 64, "split") == fused  # the same work, in other graphs
    assert call_flops(BERT_BASE, labels, 8, 64, "per-task") - fused == pytest.approx(2 * encoder)  # two passes more
    assert 0 < fused - encoder < 0.01 * encoder  # the heads are a rounding error next to the encoder
    assert batches_flops(BERT_BASE, labels, [[8, 64], [8, 64]], "fused") == 2 * fused


def test_encoder_dims_read_distilbert_names_and_roberta_position_offset():
    distil = EncoderDims.from_config({"dim": 32, "n_layers": 2, "hidden_dim": 64, "vocab_size": 100,
                                      "max_position_embeddings": 64, "model_type": "distilbert"})
    assert (distil.hidden, distil.layers, distil.intermediate, distil.max_positions) == (32, 2, 64, 64)
    roberta = EncoderDims.from_config({"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
                                       "vocab_size": 100, "max_position_embeddings": 514, "pad_token_id": 1,
                                       "model_type": "roberta"})
    assert roberta.max_positions == 512
    with pytest.raises(ConfigError, match="hidden_size"):
        EncoderDims.from_config({"vocab_size": 5})


def _row(engine, precision, mode, p50, workload="synthetic", batch=1, sequence=16, padding=None,
         latencies=None) -> Row:
    """A finished row with one timed run of `p50` seconds (or the given latencies)."""
    latencies = latencies or [p50]
    measured = Measurement(workload, mode, batch, sequence, items_per_call=batch, latencies_s=latencies,
                           artifact_bytes=1, padding=padding)
    return Row(Backend(engine, precision, "cpu"), "CPUExecutionProvider", 1, None, {}, measured,
               latency_summary(latencies, batch), flops_per_call=1.0, gflops_per_s=None)


def test_speedups_pair_rows_of_the_same_shape_with_pytorch_per_task_and_same_mode():
    rows = [
        _row("torch", "fp32", "per-task", 0.040), _row("torch", "fp32", "fused", 0.020),
        _row("ort", "int8", "fused", 0.005), _row("ort", "fp32", "split", 0.010),
        _row("torch", "fp32", "per-task", 0.100, sequence=64), _row("ort", "int8", "fused", 0.010, sequence=64),
        _row("ort", "int8", "fused", 0.010, batch=8),  # no PyTorch row of this shape
        _row("torch", "fp32", "per-task", 2.0, workload="text", batch=32, sequence=None),
        _row("ort", "int8", "per-task", 0.5, workload="text", batch=32, sequence=None),
    ]
    add_speedups(rows)
    assert rows[0].speedup == pytest.approx(1.0)
    assert rows[1].speedup == pytest.approx(2.0) and rows[1].speedup_same_mode == pytest.approx(1.0)
    assert rows[2].speedup == pytest.approx(8.0) and rows[2].speedup_same_mode == pytest.approx(4.0)
    assert rows[3].speedup == pytest.approx(4.0) and rows[3].speedup_same_mode is None  # torch has no split
    assert rows[5].speedup == pytest.approx(10.0)
    assert rows[6].speedup is None
    assert rows[8].speedup == pytest.approx(4.0) and rows[8].speedup_same_mode == pytest.approx(4.0)


def test_engine_speedup_is_the_fastest_same_work_pytorch_row_over_the_row():
    """Same work: one encoder pass, and for real text dynamic padding; the fastest PyTorch row of the same workload
    and shape, whatever its precision, is the reference, and rows doing other work get none."""
    text = {"workload": "text", "batch": 32, "sequence": None}
    rows = [
        _row("torch", "fp32", "per-task", 0.080), _row("torch", "fp32", "fused", 0.040),
        _row("torch", "int8", "fused", 0.020), _row("ort", "int8", "fused", 0.005),
        _row("ort", "int8", "per-task", 0.010),
        _row("st", "fp32", "fused", 0.010), _row("ort", "fp32", "split", 0.008),
        _row("torch", "fp32", "per-task", 4.0, padding="max_length", **text),
        _row("torch", "fp32", "fused", 2.0, padding="max_length", **text),
        _row("torch", "fp32", "fused", 1.0, padding="dynamic", **text),
        _row("ort", "fp32", "fused", 0.25, padding="dynamic", **text),
        _row("ort", "fp32", "per-task", 0.5, padding="dynamic", **text),
    ]
    add_speedups(rows)
    engine = [row.engine_speedup for row in rows]
    assert engine[:7] == pytest.approx([None, 0.5, 1.0, 4.0, None, 2.0, 2.5])
    assert {rows[i].engine_baseline for i in (1, 2, 3, 5, 6)} == {"torch-int8 fused"}
    # max-length padding and per-task routing: other work
    assert engine[7:] == pytest.approx([None, None, 1.0, 4.0, None])
    assert rows[10].engine_baseline == "torch-fp32 fused dynamic"
    # per-task routing stays the baseline of `speedup`; the same mode prefers the same padding
    assert rows[10].speedup == pytest.approx(16.0) and rows[10].speedup_same_mode == pytest.approx(4.0)
    assert rows[11].speedup_same_mode == pytest.approx(8.0)  # PyTorch's per-task row pads to max length: the only one


def test_tail_latency_is_p99_only_with_enough_runs_else_the_max():
    few = _row("ort", "fp32", "fused", 0.0, latencies=[0.001 * i for i in range(1, P99_MIN_RUNS)])
    assert tail_latency(few) == ("max", pytest.approx(0.001 * (P99_MIN_RUNS - 1)))
    latencies = [0.001 * i for i in range(1, P99_MIN_RUNS + 1)]
    enough = _row("ort", "fp32", "fused", 0.0, latencies=latencies)
    assert tail_latency(enough) == ("p99", pytest.approx(float(np.percentile(latencies, 99))))


def test_time_calls_warms_up_then_keeps_every_timed_run():
    calls = []
    latencies = time_calls(lambda: calls.append(1), warmup=2, runs=5, max_seconds=60)
    assert len(calls) == 7 and len(latencies) == 5 and all(t >= 0 for t in latencies)


def test_time_calls_stops_at_the_time_budget_but_keeps_three_runs():
    calls = []
    latencies = time_calls(lambda: calls.append(1), warmup=0, runs=1000, max_seconds=0.0)
    assert len(latencies) == 3
    assert len(time_calls(lambda: None, warmup=0, runs=2, max_seconds=0.0)) == 2


def test_accuracy_rows_compare_each_backend_with_pytorch():
    validation = {"topic": {"labels": [0, 1, 2, 3]}}
    predictions = {"ort-int8": {"topic": [0, 1, 2, 0]}, "torch-fp32": {"topic": [0, 1, 1, 3]}}
    rows = {r.backend: r for r in accuracy_rows(predictions, validation)}
    assert rows["torch-fp32"].accuracy == 0.75 and rows["torch-fp32"].delta_points == 0
    assert rows["ort-int8"].accuracy == 0.75 and rows["ort-int8"].agreement == 0.5
    assert rows["ort-int8"].reference == "torch-fp32"
    # without PyTorch, the first backend is the reference; a task the reference lacks has nothing to compare
    predictions = {"ort-fp32": {"topic": [0, 1, 2, 3]}, "ort-int8": {"topic": [0, 1, 2, 0], "sentiment": [1]}}
    rows = accuracy_rows(predictions, {**validation, "sentiment": {"labels": [1]}})
    assert {r.reference for r in rows} == {"ort-fp32"}
    int8_sentiment = next(r for r in rows if r.task == "sentiment")
    assert int8_sentiment.accuracy == 1.0 and int8_sentiment.delta_points is None and int8_sentiment.agreement is None


HAVE_BOTH = {"torch": True, "ort": True, "st": False}
HAVE_ALL = {"torch": True, "ort": True, "st": True}


def test_default_backends_per_device_and_exported_variants():
    backends, notes = resolve_backends(None, None, "cpu", HAVE_BOTH, ("fp32",))
    assert [b.name for b in backends] == ["torch-fp32", "torch-int8", "ort-fp32", "ort-fp32-opt"]
    assert any("ort-int8 skipped" in n for n in notes)
    backends, _ = resolve_backends(None, None, "cpu", {"torch": False, "ort": True, "st": False}, ("fp32", "int8"))
    assert [b.name for b in backends] == ["ort-fp32", "ort-fp32-opt", "ort-int8"]
    backends, _ = resolve_backends(None, None, "cpu", HAVE_ALL, ("fp32",))
    assert [b.name for b in backends if b.engine == "st"] == ["st-fp32", "st-int8"]  # the peer, last
    backends, notes = resolve_backends(None, None, "cuda", HAVE_ALL, ("fp32",))
    assert [b.name for b in backends] == ["torch-fp32", "torch-fp16", "ort-fp32", "ort-fp32-opt"]
    assert any("st backends skipped" in n for n in notes)
    assert Backend("ort", "fp32", "cpu").graph_optimization == "basic"
    assert Backend("ort", "fp32-opt", "cpu").variant == "fp32"


def test_backend_and_precision_lists_cross_and_fail_on_what_cannot_run():
    chosen, _ = resolve_backends(parse_backends("torch,ort"), parse_precisions("fp32,int8"), "cpu", HAVE_BOTH,
                                 ("fp32", "int8"))
    assert [b.name for b in chosen] == ["torch-fp32", "torch-int8", "ort-fp32", "ort-int8"]
    chosen, _ = resolve_backends(parse_backends("torch,st"), parse_precisions("int8"), "cpu", HAVE_ALL, ())
    assert [b.name for b in chosen] == ["torch-int8", "st-int8"]
    with pytest.raises(ConfigError, match="not available for torch"):
        resolve_backends(("torch",), ("fp32-opt",), "cpu", HAVE_BOTH, ("fp32",))
    with pytest.raises(ConfigError, match="runs on cpu only"):
        resolve_backends(("st",), None, "cuda", HAVE_ALL, ())
    with pytest.raises(ConfigError, match="runs on cuda only"):
        resolve_backends(("torch-fp16",), None, "cpu", HAVE_BOTH, ())
    with pytest.raises(ConfigError, match="was not exported"):
        resolve_backends(("ort-int8",), None, "cpu", HAVE_BOTH, ("fp32",))
    with pytest.raises(BenchError, match="needs a checkpoint"):
        resolve_backends(("torch",), None, "cpu", {"torch": False, "ort": True}, ("fp32",))
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        parse_backends("tensorrt")
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        parse_precisions("fp32,int4")


def test_a_busy_machine_is_noted():
    from mtl.bench.environment import busy_note

    assert "busy" in busy_note([3.5, 3.0, 2.0], 2)
    assert busy_note([0.1, 0.2, 0.3], 2) is None and busy_note(None, 2) is None


def test_offline_fusion_is_read_from_the_manifest_settings():
    from types import SimpleNamespace

    from mtl.bench.backends import offline_fused

    def manifest(settings):
        return SimpleNamespace(variants={"fp32": SimpleNamespace(settings=settings)})

    assert offline_fused(manifest({"optimization": {"encoder": {"kept": False}, "model": {"kept": True}}}))
    assert not offline_fused(manifest({"optimization": {"encoder": {"kept": False}}}))
    assert not offline_fused(manifest({}))
