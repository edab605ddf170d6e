"""The bench's arithmetic and choices, without any model: percentiles, speed-up pairing, FLOPs, the timing loop,
accuracy rows and backend resolution."""

import numpy as np
import pytest

from mtl.bench.backends import Backend, parse_backends, parse_precisions, resolve_backends
from mtl.bench.harness import accuracy_rows
from mtl.bench.stats import EncoderDims, add_speedups, batches_flops, call_flops, encoder_flops, latency_summary
from mtl.bench.worker import time_calls
from mtl.errors import BenchError, ConfigError

BERT_BASE = EncoderDims(hidden=768, layers=12, intermediate=3072, max_positions=512, vocab_size=30522)


def test_latency_summary_matches_numpy_on_known_data():
    latencies = [0.010, 0.012, 0.011, 0.050, 0.013, 0.009, 0.010, 0.011, 0.012, 0.100]
    summary = latency_summary(latencies, items_per_call=8)
    for q in (50, 90, 99):
        assert summary[f"p{q}_s"] == pytest.approx(np.percentile(latencies, q))
    assert summary["mean_s"] == pytest.approx(np.mean(latencies))
    assert summary["min_s"] == 0.009 and summary["runs"] == 10
    assert summary["throughput_per_s"] == pytest.approx(8 / np.mean(latencies))


def test_latency_summary_needs_data():
    with pytest.raises(ValueError):
        latency_summary([], 1)


def test_encoder_flops_of_bert_base_at_128_tokens():
    # per layer: 2*128*(4*768^2 + 2*768*3072) + 4*128^2*768, twelve layers: the well-known ~22.3 GFLOPs
    assert encoder_flops(BERT_BASE, 1, 128) == 12 * (2 * 128 * (4 * 768**2 + 2 * 768 * 3072) + 4 * 128**2 * 768)
    assert encoder_flops(BERT_BASE, 1, 128) == pytest.approx(22.35e9, rel=1e-3)
    assert encoder_flops(BERT_BASE, 4, 128) == 4 * encoder_flops(BERT_BASE, 1, 128)  # linear in batch


def test_call_flops_counts_one_encoder_pass_per_task_for_seed_routing():
    labels = [4, 3]
    heads = sum(2 * 8 * (768 * 768 + 768 * n) for n in labels)
    encoder = encoder_flops(BERT_BASE, 8, 64)
    assert call_flops(BERT_BASE, labels, 8, 64, "fused") == encoder + heads
    assert call_flops(BERT_BASE, labels, 8, 64, "split") == encoder + heads
    assert call_flops(BERT_BASE, labels, 8, 64, "seed") == 2 * encoder + heads
    assert batches_flops(BERT_BASE, labels, [[8, 64], [8, 64]], "fused") == 2 * (encoder + heads)


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


def _row(engine, precision, mode, p50, workload="synthetic", batch=1, sequence=16):
    return {"engine": engine, "precision": precision, "mode": mode, "p50_s": p50, "workload": workload,
            "device": "cpu", "batch_size": batch, "sequence_length": sequence}


def test_speedups_pair_rows_of_the_same_shape_with_pytorch_seed_and_same_mode():
    rows = [
        _row("torch", "fp32", "seed", 0.040), _row("torch", "fp32", "fused", 0.020),
        _row("ort", "int8", "fused", 0.005), _row("ort", "fp32", "split", 0.010),
        _row("torch", "fp32", "seed", 0.100, sequence=64), _row("ort", "int8", "fused", 0.010, sequence=64),
        _row("ort", "int8", "fused", 0.010, batch=8),  # no PyTorch row of this shape
        _row("torch", "fp32", "seed", 2.0, workload="text", batch=32, sequence=None),
        _row("ort", "int8", "seed", 0.5, workload="text", batch=32, sequence=None),
    ]
    add_speedups(rows)
    assert rows[0]["speedup"] == pytest.approx(1.0)
    assert rows[1]["speedup"] == pytest.approx(2.0) and rows[1]["speedup_same_mode"] == pytest.approx(1.0)
    assert rows[2]["speedup"] == pytest.approx(8.0) and rows[2]["speedup_same_mode"] == pytest.approx(4.0)
    assert rows[3]["speedup"] == pytest.approx(4.0) and rows[3]["speedup_same_mode"] is None  # torch has no split
    assert rows[5]["speedup"] == pytest.approx(10.0)
    assert rows[6]["speedup"] is None
    assert rows[8]["speedup"] == pytest.approx(4.0) and rows[8]["speedup_same_mode"] == pytest.approx(4.0)


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
    rows = {r["backend"]: r for r in accuracy_rows(predictions, validation)}
    assert rows["torch-fp32"]["accuracy"] == 0.75 and rows["torch-fp32"]["delta_points"] == 0
    assert rows["ort-int8"]["accuracy"] == 0.75 and rows["ort-int8"]["agreement"] == 0.5
    assert rows["ort-int8"]["reference"] == "torch-fp32"


HAVE_BOTH = {"torch": True, "ort": True}


def test_default_backends_per_device_and_exported_variants():
    backends, notes = resolve_backends(None, None, "cpu", HAVE_BOTH, ("fp32",))
    assert [b.name for b in backends] == ["torch-fp32", "ort-fp32", "ort-fp32-opt"]
    assert any("ort-int8 skipped" in n for n in notes)
    backends, _ = resolve_backends(None, None, "cpu", {"torch": False, "ort": True}, ("fp32", "int8"))
    assert [b.name for b in backends] == ["ort-fp32", "ort-fp32-opt", "ort-int8"]
    assert Backend("ort", "fp32", "cpu").graph_optimization == "basic"
    assert Backend("ort", "fp32-opt", "cpu").variant == "fp32"


def test_backend_and_precision_lists_cross_and_fail_on_what_cannot_run():
    chosen, _ = resolve_backends(parse_backends("torch,ort"), parse_precisions("fp32,int8"), "cpu", HAVE_BOTH,
                                 ("fp32", "int8"))
    assert [b.name for b in chosen] == ["torch-fp32", "ort-fp32", "ort-int8"]  # torch has no int8: skipped
    with pytest.raises(ConfigError, match="not available for torch"):
        resolve_backends(("torch",), ("int8",), "cpu", HAVE_BOTH, ("fp32",))
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
