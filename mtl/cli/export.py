"""`mtl-onnx export`: checkpoint -> validated ONNX folder (and optionally a Triton model repository), with a line
per finished step and the summary tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mtl.artifacts.checkpoint import check_checkpoint
from mtl.artifacts.manifest import PRECISIONS
from mtl.cli.options import (
    CheckpointArg,
    Int8Target,
    LabelField,
    Precision,
    TextField,
    TritonDevice,
    TrustRemoteCode,
    check_input_files,
    choices_metavar,
    comma_list,
    console,
    setup_logging,
    shown,
    user_errors,
)
from mtl.export.options import parse_precisions
from mtl.extras import require_extra


def export(
    checkpoint: CheckpointArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the export; written only once validated.")],
    precision: Annotated[str, typer.Option(
        metavar=choices_metavar(PRECISIONS), parser=comma_list(parse_precisions),
        help="The variants to make: fp32 (always made), int8 (for CPUs), fp16 (for GPUs).")] = "fp32",
    optimize: Annotated[bool, typer.Option(
        help="ONNX Runtime transformer fusion, kept only where measured faster.")] = False,
    validation_data: Annotated[Optional[list[str]], typer.Option(
        help="TASK=FILE of labelled examples to check every variant on (default: the validation files the "
             "checkpoint was trained with); repeatable.")] = None,
    recorded_data: Annotated[bool, typer.Option(
        "--recorded-data/--no-recorded-data",
        help="Without --validation-data, check on the checkpoint's own validation files.")] = True,
    max_int8_drop: Annotated[float, typer.Option(help="Refuse int8 if any task loses more accuracy points.")] = 1.0,
    max_int8_f1_drop: Annotated[float, typer.Option(help="Refuse int8 if any task loses more macro-F1 points.")] = 1.0,
    force_int8: Annotated[bool, typer.Option(help="Keep int8 even past the limits (its status says so).")] = False,
    int8_target: Annotated[Int8Target, typer.Option(help="The CPU family int8 is tuned for.")] = "auto",
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="Int8 weight scales.")] = True,
    opset: Annotated[int, typer.Option(min=14, max=20, help="ONNX opset.")] = 17,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for PyTorch and ONNX Runtime.")] = None,
    text_field: TextField = "text",
    label_field: LabelField = "label",
    overwrite: Annotated[bool, typer.Option(help="Replace an export already in --output.")] = False,
    triton: Annotated[Optional[Path], typer.Option(
        help="Also write a Triton Inference Server model repository here.")] = None,
    triton_device: Annotated[TritonDevice, typer.Option(help="Where Triton runs the model.")] = "cpu",
    triton_precision: Annotated[Precision, typer.Option(
        help="Variant Triton serves (auto: int8 on cpu, fp16 on gpu).")] = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Export a checkpoint to ONNX: the encoder, one head per task and the fused model, each validated against
    PyTorch on several shapes before anything is written."""
    with user_errors():
        from mtl.data.files import parse_named_files
        from mtl.export.options import ExportOptions

        check_checkpoint(checkpoint)
        validation_files = parse_named_files(validation_data or [], "--validation-data", "TASK=FILE")
        check_input_files(validation_files.values())
        options = ExportOptions(
            precisions=parse_precisions(precision), optimize=optimize, opset=opset,
            validation_data=validation_files,
            text_field=text_field,
            label_field=label_field, max_int8_drop=max_int8_drop, max_int8_f1_drop=max_int8_f1_drop,
            force_int8=force_int8, recorded_data=recorded_data, int8_target=int8_target.value,
            per_channel=per_channel, threads=threads, overwrite=overwrite,
            trust_remote_code=trust_remote_code,
        ).checked()
        if triton is not None:  # a bad choice, a foreign folder or a missing `triton` extra fails now, not after
            from mtl.export.triton import check_triton_precision, check_triton_target, triton_config_module

            check_triton_precision(triton_precision.value, options.precisions)
            check_triton_target(triton, overwrite=overwrite)
            triton_config_module()
        require_extra("train", "export")
        result = run_export(checkpoint, output, options)
        if triton is not None:
            from mtl.export.triton import write_triton_repository

            model = write_triton_repository(result.output, triton, device=triton_device.value,
                                            precision=triton_precision.value,
                                            overwrite=overwrite)
            console.print(f"Triton model repository in [bold]{shown(model)}[/bold] (config.pbtxt validated)")


def run_export(checkpoint: Path, output: Path, options):
    """Export with a line per finished step, then the table of graphs and the real-data accuracy table."""
    setup_logging()
    from mtl.cli.tables import graphs_table, print_tables, real_data_table
    from mtl.export import export_checkpoint

    def step_done(message: str, seconds: float) -> None:
        console.print(f"[green]✓[/green] {shown(message)} [dim]({seconds:.1f} s)[/dim]", highlight=False)

    with console.status("exporting"):
        result = export_checkpoint(checkpoint, output, options, on_step=step_done)
    accuracy = real_data_table(result)
    print_tables(graphs_table(result), *([accuracy] if accuracy is not None else []))
    for note in result.notes:  # a note may name a path from the checkpoint's own record: no raw control characters
        console.print(f"[yellow]note:[/yellow] {shown(note)}")
    console.print(f"exported to [bold]{shown(result.output)}[/bold] in {result.seconds:.0f} s")
    return result


