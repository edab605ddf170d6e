"""The `mtl-onnx` Typer app: one command per stage, each defined in its own module of `mtl.cli`."""

from __future__ import annotations

import typer

from mtl.cli.bench import bench
from mtl.cli.export import export
from mtl.cli.predict import evaluate, predict
from mtl.cli.quickstart import quickstart
from mtl.cli.train import train

app = typer.Typer(
    name="mtl-onnx",
    help="Train a multi-task text classifier in PyTorch, export it to ONNX, run it fast anywhere.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click errors: a bad option value ends in one `Error: ...` line (exit 2), not a boxed panel.
    rich_markup_mode=None,
)

for command in (train, evaluate, predict, export, bench, quickstart):
    app.command()(command)

if __name__ == "__main__":
    app()
