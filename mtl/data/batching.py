"""Grouping rows of similar length into batches, so that padding stays small (no torch: the runtime, the
PyTorch predictor and the bench batch alike)."""

from __future__ import annotations


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small.
    Callers put results back in input order by these indices."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
