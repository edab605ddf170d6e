"""PyTorch checkpoint -> validated ONNX export folder (torch; the runtime in `mtl.runtime` needs none).

`export_checkpoint` is imported on first use, so that `mtl.export.options` can check the CLI's options without
loading PyTorch.
"""

from __future__ import annotations

from mtl.export.options import ExportOptions, parse_precisions

__all__ = ["ExportOptions", "export_checkpoint", "parse_precisions"]


def __getattr__(name: str):
    if name in ("export_checkpoint", "ExportResult"):
        try:
            from mtl.export import pipeline
        except ImportError as err:  # a runtime-only install: torch, transformers, onnx are the train extra
            from mtl.errors import MissingDependencyError
            from mtl.extras import install_command

            raise MissingDependencyError(
                f"exporting needs {err.name or 'PyTorch'}, which is not installed; {install_command('train')}"
            ) from None
        return getattr(pipeline, name)
    raise AttributeError(f"module 'mtl.export' has no attribute {name!r}")
