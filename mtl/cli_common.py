"""What every `mtl-onnx` command shares: the stderr console, option types, the user-error guard and logging.
Imports nothing heavy."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from mtl.errors import UserError

console = Console(stderr=True)  # stdout carries results (JSON lines, tables); messages go to stderr

TextField = Annotated[str, typer.Option(help="Name of the text field / column.")]
LabelField = Annotated[str, typer.Option(help="Name of the label field / column.")]
CheckpointArg = Annotated[Path, typer.Argument(help="A checkpoint folder written by `mtl-onnx train`.")]


@contextlib.contextmanager
def user_errors():
    """A user's mistake becomes one red line and exit code 1; Ctrl-C exits 130. Bugs still raise."""
    try:
        yield
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        raise typer.Exit(130) from None
    except Exception as err:
        if isinstance(err, UserError):
            # escape: messages hold literal brackets ("pip install 'mtl-onnx[gpu]'") that rich would eat as markup
            console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        raise


def setup_logging(torch_side: bool = True) -> None:
    """Library logs through rich on stderr; transformers' own chatter only on errors (it is imported only on
    the PyTorch side, so the ONNX paths stay light)."""
    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=console, show_path=False)],
                        format="%(message)s")
    logging.getLogger("mtl").setLevel(logging.INFO)
    if torch_side:
        import transformers

        transformers.logging.set_verbosity_error()
