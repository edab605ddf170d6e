"""Running an exported model: tokenizers + onnxruntime + numpy, no torch, no transformers.

`Predictor` is imported on first use, so that reading a manifest (`mtl.artifacts.manifest`) does not load
onnxruntime.
"""

from __future__ import annotations

__all__ = ["Predictor"]


def __getattr__(name: str):
    if name == "Predictor":
        from mtl.runtime.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'mtl.runtime' has no attribute {name!r}")
