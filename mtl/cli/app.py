"""The `mtl-onnx` Typer app: one command per stage, each defined in its own module of `mtl.cli`, and `--version`."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer
from typer.core import TyperCommand

import mtl
from mtl.cli.bench import bench
from mtl.cli.export import export
from mtl.cli.predict import evaluate, predict
from mtl.cli.quickstart import quickstart
from mtl.cli.train import train

DISTRIBUTION = "mtl-onnx"


class PanelledHelpCommand(TyperCommand):
    """Plain click help (the app has no rich markup, so that a bad option value stays one `Error:` line), with each
    option listed under its `rich_help_panel` heading, in the order the headings first appear; options without
    one under "Options"."""

    def format_options(self, ctx, formatter) -> None:  # click's Context and HelpFormatter, whichever click Typer uses
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                heading = "Arguments"
            else:
                heading = getattr(param, "rich_help_panel", None) or "Options"
            sections.setdefault(heading, []).append(record)
        for heading, records in sections.items():
            with formatter.section(heading):
                formatter.write_dl(records)


def installed_version() -> str:
    """The installed distribution's version (package metadata); a source tree that is not installed has only
    `mtl.__version__`."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return mtl.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{DISTRIBUTION} {installed_version()}")
        raise typer.Exit()


app = typer.Typer(
    name=DISTRIBUTION,
    help="Train a multi-task text classifier in PyTorch, export it to ONNX, run it fast anywhere.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click errors: a bad option value ends in one `Error: ...` line (exit 2), not a boxed panel.
    rich_markup_mode=None,
)


@app.callback()
def main(
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, help="Print mtl-onnx's version and exit.")] = False,
) -> None:
    """Options of `mtl-onnx` itself, before any command (the app's help text is Typer's `help`)."""


for command in (train, evaluate, predict, export, bench, quickstart):
    app.command(cls=PanelledHelpCommand)(command)

if __name__ == "__main__":
    app()
