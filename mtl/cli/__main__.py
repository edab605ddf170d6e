"""`python -m mtl.cli` (what `torchrun -m mtl.cli` runs): the same app as the `mtl-onnx` console script."""

from mtl.cli.app import app

app()
