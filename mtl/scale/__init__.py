"""Predictions over a corpus on Ray Data (the `ray` extra; no torch): `predict_dataset` composes with a user's own
`ray.data.Dataset`, `PredictBatches` is its callable class for `Dataset.map_batches`, and `mtl.scale.job` is
`mtl-onnx predict --engine ray`. Nothing here is imported by the base install or the runtime; ray is imported on
first use."""

from __future__ import annotations

__all__ = ["PredictBatches", "predict_dataset"]


def __getattr__(name: str):
    if name in __all__:
        from mtl.scale import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'mtl.scale' has no attribute {name!r}")
