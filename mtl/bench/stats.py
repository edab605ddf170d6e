"""Numbers derived from raw latencies: percentiles, throughput, speed-ups, and the FLOPs an encoder call costs.

Everything here takes and returns plain floats (seconds, FLOPs); formatting happens only in `report`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mtl.artifacts.encoder_config import first_int, num_layers, position_limit

PERCENTILES = (50, 90, 99)
# The baseline every speed-up is measured against: eager PyTorch fp32 routed the seed's way (one encoder pass
# per task), i.e. what the project started from.
BASELINE = ("torch", "fp32", "seed")


def latency_summary(latencies_s: list[float], items_per_call: int) -> dict[str, float]:
    """p50/p90/p99/mean/min/std in seconds, and throughput in items (texts) per second over the mean."""
    if not latencies_s:
        raise ValueError("no latencies to summarise")
    values = np.asarray(latencies_s, dtype=np.float64)
    summary = {f"p{q}_s": float(np.percentile(values, q)) for q in PERCENTILES}
    mean = float(values.mean())
    summary.update(mean_s=mean, min_s=float(values.min()), std_s=float(values.std()), runs=len(values),
                   throughput_per_s=items_per_call / mean if mean > 0 else float("inf"))
    return summary


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
    """FLOPs a backend executes for one call of `mode` over every task: the seed's routing runs the encoder once
    per task; fused and split run it once. Counted as executed, so GFLOP/s says how well the hardware is used,
    and the seed mode's wasted passes show up as time, not as missing FLOPs."""
    passes = len(labels_per_task) if mode == "seed" else 1
    heads = sum(head_flops(dims.hidden, n, batch) for n in labels_per_task)
    return passes * encoder_flops(dims, batch, sequence) + heads


def batches_flops(dims: EncoderDims, labels_per_task: list[int], shapes: list[list[int]], mode: str) -> float:
    """FLOPs of a pass over a corpus, given the (batch, padded length) of every batch the backend ran."""
    return sum(call_flops(dims, labels_per_task, batch, length, mode) for batch, length in shapes)


def _shape_key(row: dict[str, Any]) -> tuple:
    return (row["workload"], row["device"], row.get("batch_size"), row.get("sequence_length"))


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """In place: `speedup` against the seed-routed PyTorch fp32 row of the same workload and shape, and
    `speedup_same_mode` against the PyTorch fp32 row of the same mode (None where there is no such row).
    Ratios of p50 latencies: one slow outlier does not move them."""
    reference = {}
    for row in rows:
        if (row["engine"], row["precision"]) == BASELINE[:2]:
            reference[(*_shape_key(row), row["mode"])] = row["p50_s"]
    for row in rows:
        seed = reference.get((*_shape_key(row), BASELINE[2]))
        same = reference.get((*_shape_key(row), row["mode"]))
        row["speedup"] = seed / row["p50_s"] if seed and row["p50_s"] > 0 else None
        row["speedup_same_mode"] = same / row["p50_s"] if same and row["p50_s"] > 0 else None


def geometric_mean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else None
