"""What every `mtl-onnx` command shares: the stderr console, the user-error guard, logging, and the option types
(`Annotated` aliases, and a `str` Enum for every choice, built from the library's own list of valid values so the
two cannot drift). Imports nothing heavy."""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional, get_args

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from mtl.artifacts.manifest import DEVICES, EXECUTIONS, PRECISION_CHOICES
from mtl.config import CLASS_WEIGHTINGS, POOLING_MODES, SAMPLING_MODES, TRAIN_PRECISIONS
from mtl.data.sources import open_source
from mtl.errors import ConfigError, OutputError, UserError
from mtl.export.options import INT8_TARGETS, TRITON_DEVICES
from mtl.text import printable

console = Console(stderr=True)  # stdout carries results (JSON lines, tables); messages go to stderr


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    return Enum(name, {value.replace("-", "_"): value for value in values}, type=str)


Pooling = _choices("Pooling", POOLING_MODES)
Sampling = _choices("Sampling", SAMPLING_MODES)
ClassWeighting = _choices("ClassWeighting", CLASS_WEIGHTINGS)
TrainPrecision = _choices("TrainPrecision", TRAIN_PRECISIONS)
Precision = _choices("Precision", PRECISION_CHOICES)
Device = _choices("Device", DEVICES)
Execution = _choices("Execution", EXECUTIONS)
Int8Target = _choices("Int8Target", INT8_TARGETS)
TritonDevice = _choices("TritonDevice", TRITON_DEVICES)

TextField = Annotated[str, typer.Option(help="Name of the text field / column.")]
LabelField = Annotated[str, typer.Option(help="Name of the label field / column.")]
CheckpointArg = Annotated[Path, typer.Argument(help="A checkpoint folder written by `mtl-onnx train`.")]
ModelArg = Annotated[Path, typer.Argument(
    help="A checkpoint folder (PyTorch) or an export folder from `mtl-onnx export` (ONNX Runtime, no torch).")]
PrecisionOption = Annotated[Precision, typer.Option(
    help="Export folders: the variant to run (auto: int8 on CPU, fp16 on CUDA, where exported).")]
DeviceOption = Annotated[Device, typer.Option(help="Export folders: where ONNX Runtime runs.")]
ThreadsOption = Annotated[Optional[int], typer.Option(
    min=1, help="Export folders: intra-op threads (default: the usable cores).")]
BatchSizeOption = Annotated[int, typer.Option(min=1, help="Texts per inference batch.")]
TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Let a model folder whose config has an auto_map run its own Python code (off: never; "
                                "only for a folder whose code you have read).")]


def in_panel(option, panel: str):
    """A shared option alias (`TextField`, ...) listed under the heading `panel` in its command's --help."""
    kind, info = get_args(option)
    info = copy.copy(info)
    info.rich_help_panel = panel
    return Annotated[kind, info]


def comma_list(parse: Callable[[str], object]) -> Callable[[str], str]:
    """A `parser=` for an option that takes a comma-separated list of choices: the library's own `parse` checks
    it, and its refusal becomes the option's (exit 2, naming the option) before any work. The text goes on as it
    was given."""

    def check(text: str) -> str:
        try:
            parse(text)
        except ConfigError as err:
            raise typer.BadParameter(str(err)) from None
        return text

    return check


def choices_metavar(valid: tuple[str, ...]) -> str:
    """What --help shows for a comma-separated list of choices, like the `<a|b>` of a single one."""
    return f"<{'|'.join(valid)}>[,...]"


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
            # printable: a label, path or file name from the data never reaches the terminal as an escape sequence;
            # escape: messages hold literal brackets ("pip install 'mtl-onnx[gpu]'") that rich would eat as markup
            message = escape(printable(str(err), keep_newlines=True))
            console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        raise


def shown(value: object) -> str:
    """A path or name from the user or a folder, ready for a rich markup string: escape sequences and control
    characters escaped (`printable`), and brackets that rich would read as markup escaped too."""
    return escape(printable(str(value)))


def check_stdout(what: str) -> None:
    """One error before any work when standard output, which carries `what`, is closed (`>&-`): Python then has
    no stdout at all, and the results would be lost (or end in a traceback at the first write)."""
    if sys.stdout is None:
        raise OutputError(f"standard output is closed, so {what} would be lost; send it to a file or /dev/null "
                          f"instead of closing it")


def check_input_files(paths) -> None:
    """Every input file exists and can be read, checked before the command imports torch or loads a model (seconds):
    a mistyped name costs one line at once. The readers check again as they open each file."""
    for path in paths:
        open_source(path)


def _printable_record(record: logging.LogRecord) -> bool:
    """A log line, like an error line, shows data (labels, paths) escaped: formatted here, once, at the terminal."""
    record.msg, record.args = printable(record.getMessage(), keep_newlines=True), None
    return True


def setup_logging(torch_side: bool = True) -> None:
    """Library logs through rich on stderr; transformers' own chatter only on errors (it is imported only on
    the PyTorch side, so the ONNX paths stay light)."""
    handler = RichHandler(console=console, show_path=False)
    handler.addFilter(_printable_record)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s")
    logging.getLogger("mtl").setLevel(logging.INFO)
    if torch_side:
        import transformers

        transformers.logging.set_verbosity_error()
        # transformers 5 draws a "Loading weights" bar on every from_pretrained; the CLI draws its own progress.
        transformers.logging.disable_progress_bar()
