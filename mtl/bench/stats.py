"""Numbers derived from raw latencies: percentiles, throughput, speed-ups, and the FLOPs an encoder call costs.

Everything here takes and returns plain floats (seconds, FLOPs); formatting happens only in `report`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mtl.artifacts.encoder_config import first_int, num_layers, position_limit
from mtl.bench.records import LatencySummary, Row

# The baseline of `speedup`: eager PyTorch fp32 with per-task routing (one encoder pass per task; real text padded
# to max length), i.e. what the project started from.
BASELINE = ("torch", "fp32", "per-task")
# The baseline of `engine_speedup`: the same work done by PyTorch at its best, so that the ratio is the engine's.
ENGINE_BASELINE = ("the fastest PyTorch row of the same workload and shape that runs one encoder pass for every task "
                   "(real text: length-sorted, each batch padded to its longest row)")
ONE_PASS_MODES = ("fused", "split")
# Fewer timed runs than this, and "p99" would be the slowest run under another name: the report shows the max.
P99_MIN_RUNS = 50


def latency_summary(latencies_s: list[float], items_per_call: int) -> LatencySummary:
    """p50/p90/p99/mean/min/std in seconds, and throughput in items (texts) per second over the mean."""
    if not latencies_s:
        raise ValueError("no latencies to summarise")
    values = np.asarray(latencies_s, dtype=np.float64)
    p50, p90, p99 = (float(p) for p in np.percentile(values, (50, 90, 99)))
    mean = float(values.mean())
    return LatencySummary(p50_s=p50, p90_s=p90, p99_s=p99, mean_s=mean, min_s=float(values.min()),
                          std_s=float(values.std()), runs=len(values),
                          throughput_per_s=items_per_call / mean if mean > 0 else float("inf"))


@dataclass(frozen=True)
class EncoderDims:
    """What the FLOP count and the input limits need from a Hugging Face encoder config."""

    hidden: int
    layers: int
    intermediate: int
    max_positions: int
    vocab_size: int
    model_type: str = ""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncoderDims:
        """Reads BERT-style names and DistilBERT's own (dim, n_layers, hidden_dim)."""
        hidden = first_int(config, "hidden_size", "dim", "d_model")
        return cls(
            hidden=hidden,
            layers=num_layers(config),
            intermediate=first_int(config, "intermediate_size", "hidden_dim", "ffn_dim", default=4 * hidden),
            max_positions=position_limit(config),
            vocab_size=first_int(config, "vocab_size"),
            model_type=str(config.get("model_type", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encoder_flops(dims: EncoderDims, batch: int, sequence: int) -> float:
    """Multiply-adds x 2 of one encoder pass: per layer the Q/K/V/output projections (4h^2 per token) and the
    feed-forward block (2·h·ffn per token), plus attention scores and their weighted sum (4·s^2·h per sequence).
    Embeddings, norms and softmax are left out: they are a few percent. DeBERTa's relative attention costs more
    than this counts."""
    tokens = batch * sequence
    dense = 2.0 * tokens * (4 * dims.hidden**2 + 2 * dims.hidden * dims.intermediate)
    attention = 4.0 * batch * sequence**2 * dims.hidden
    return dims.layers * (dense + attention)


def head_flops(hidden: int, num_labels: int, batch: int) -> float:
    """Linear(h,h) then Linear(h,n) on the pooled vector."""
    return 2.0 * batch * (hidden * hidden + hidden * num_labels)


def call_flops(dims: EncoderDims, labels_per_task: list[int], batch: int, sequence: int, mode: str) -> float:
    """FLOPs a backend executes for one call of `mode` over every task: per-task routing runs the encoder once
    per task; fused and split run it once. Counted as executed, so GFLOP/s says how well the hardware is used,
    and the per-task mode's repeated passes show up as time, not as missing FLOPs."""
    passes = len(labels_per_task) if mode == "per-task" else 1
    heads = sum(head_flops(dims.hidden, n, batch) for n in labels_per_task)
    return passes * encoder_flops(dims, batch, sequence) + heads


def batches_flops(dims: EncoderDims, labels_per_task: list[int], shapes: list[list[int]], mode: str) -> float:
    """FLOPs of a pass over a corpus, given the (batch, padded length) of every batch the backend ran."""
    return sum(call_flops(dims, labels_per_task, batch, length, mode) for batch, length in shapes)


def _shape_key(row: Row) -> tuple:
    return (row.measured.workload, row.backend.device, row.measured.batch_size, row.measured.sequence_length)


def same_work(row: Row) -> bool:
    """Whether a row does the work a capable user's PyTorch does: one encoder pass, no padding past the longest row."""
    return row.measured.mode in ONE_PASS_MODES and row.measured.padding in (None, "dynamic")


def add_speedups(rows: list[Row]) -> None:
    """In place: `speedup` against the per-task-routed PyTorch fp32 row of the same workload and shape;
    `speedup_same_mode` against the PyTorch fp32 row of the same mode (of the same padding where there is one);
    `engine_speedup` against the fastest PyTorch row doing the same work (`same_work`), named in `engine_baseline`.
    None where there is no such row. Ratios of p50 latencies: one slow outlier does not move them."""
    reference, best = {}, {}
    for row in rows:
        key = _shape_key(row)
        if (row.backend.engine, row.backend.precision) == BASELINE[:2]:
            reference[(*key, row.measured.mode, row.measured.padding)] = row.summary.p50_s
            reference.setdefault((*key, row.measured.mode), row.summary.p50_s)
        if row.backend.engine == "torch" and same_work(row) and (key not in best or row.summary.p50_s < best[key][0]):
            best[key] = (row.summary.p50_s, row.label)
    for row in rows:
        key, mode, p50 = _shape_key(row), row.measured.mode, row.summary.p50_s
        row.speedup = _ratio(reference.get((*key, BASELINE[2])), p50)
        row.speedup_same_mode = _ratio(reference.get((*key, mode, row.measured.padding))
                                       or reference.get((*key, mode)), p50)
        fastest = best.get(key) if same_work(row) else None
        row.engine_speedup = _ratio(fastest[0], p50) if fastest else None
        row.engine_baseline = fastest[1] if fastest else None


def _ratio(reference: float | None, p50: float) -> float | None:
    return reference / p50 if reference and p50 > 0 else None


def tail_latency(row: Row) -> tuple[str, float]:
    """("p99", seconds) where the row has P99_MIN_RUNS timed runs, else ("max", its slowest run)."""
    if row.summary.runs >= P99_MIN_RUNS:
        return "p99", row.summary.p99_s
    return "max", max(row.measured.latencies_s)


def geometric_mean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else None
