"""`mtl-onnx`: one Typer app over training, evaluation, prediction, export, benchmarking and the quickstart.

Nothing here imports torch: each command imports what it needs when it runs, so `mtl-onnx --help` and the ONNX
paths start fast."""

from mtl.cli.app import app

__all__ = ["app"]
