"""`mtl-onnx bench` and the quickstart's small bench: option parsing and output writing around `mtl.bench`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from mtl.artifacts.reports import check_output_file
from mtl.bench.backends import (
    ALL_PRECISIONS,
    BACKEND_NAMES,
    ENGINES,
    MODES,
    PLAIN_INT8,
    WORKLOADS,
    parse_backends,
    parse_modes,
    parse_precisions,
    parse_workloads,
)
from mtl.bench.worker import MIN_RUNS
from mtl.cli.options import (
    Device,
    LabelField,
    TextField,
    check_stdout,
    choices_metavar,
    comma_list,
    console,
    in_panel,
    setup_logging,
    shown,
    user_errors,
)

if TYPE_CHECKING:
    from mtl.bench.records import Report


def run_quick_bench(model_dir: Path, onnx_dir: Path, output: Path, device: str = "cpu") -> None:
    from mtl.bench import report as bench_report
    from mtl.bench.harness import quick_bench
    from mtl.cli.tables import print_tables

    with bench_report.progress_bar(console) as on_progress:
        result = quick_bench(model_dir, onnx_dir, validation_data="demo", device=device, on_progress=on_progress)
    write_bench_outputs(result, output / "bench.json", output / "bench.md", None)
    print_tables(*bench_report.rich_tables(result))


# `bench --help` lists its options under these headings, in this order.
MODEL, BACKENDS, WORKLOADS_PANEL, TIMING, ACCURACY, OUTPUT = (
    "Model", "Backends", "Workloads", "Timing", "Accuracy", "Output")


def bench(
    model: Annotated[Optional[Path], typer.Argument(
        help="A checkpoint or an export folder (or give both with --checkpoint and --onnx).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="Checkpoint folder: the PyTorch backends and the peer run on it.", rich_help_panel=MODEL)] = None,
    onnx: Annotated[Optional[Path], typer.Option(
        "--onnx", help="Export folder: the ONNX Runtime backends run on it.", rich_help_panel=MODEL)] = None,
    backend: Annotated[Optional[str], typer.Option(
        metavar=choices_metavar(("ENGINE", "ENGINE-PRECISION")), parser=comma_list(parse_backends),
        help=f"Engines ({', '.join(ENGINES)}; st is the peer, sentence-transformers' ONNX backend, which needs the "
             f"peer extra) or exact backends ({', '.join(BACKEND_NAMES)}) (default: all that can run).",
        rich_help_panel=BACKENDS)] = None,
    precision: Annotated[Optional[str], typer.Option(
        metavar=choices_metavar(ALL_PRECISIONS), parser=comma_list(parse_precisions),
        help=f"{PLAIN_INT8}: ort's int8 without attention fusion, built by the bench (default on cpu: torch "
             f"fp32,int8; ort fp32,fp32-opt,int8; st fp32,int8; on cuda: fp32,fp32-opt,fp16).",
        rich_help_panel=BACKENDS)] = None,
    mode: Annotated[str, typer.Option(
        metavar=choices_metavar(MODES), parser=comma_list(parse_modes),
        help="per-task: an encoder pass per task (PyTorch pads real text to max length; the baseline of the "
             "speed-ups); fused: one pass for every task (PyTorch's real text is measured padded to max length "
             "and dynamically); split: ort's encoder graph once, then each head's graph.",
        rich_help_panel=BACKENDS)] = ",".join(MODES),
    device: Annotated[Device, typer.Option(help="Where every backend runs.", rich_help_panel=BACKENDS)] = "cpu",
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="Threads for each backend (default: the usable cores).", rich_help_panel=BACKENDS)] = None,
    workload: Annotated[str, typer.Option(
        metavar=choices_metavar(WORKLOADS), parser=comma_list(parse_workloads),
        help="synthetic: fixed-shape batches of random token ids; text: passes over real texts.",
        rich_help_panel=WORKLOADS_PANEL)] = ",".join(WORKLOADS),
    batch_sizes: Annotated[str, typer.Option(
        help="Batch sizes of the synthetic sweep, comma-separated.", rich_help_panel=WORKLOADS_PANEL)] = "1,8,32",
    seq_lengths: Annotated[str, typer.Option(
        help="Sequence lengths of the synthetic sweep, comma-separated.", rich_help_panel=WORKLOADS_PANEL)
    ] = "16,64,128,256",
    corpus: Annotated[Optional[Path], typer.Option(
        help="JSONL/CSV texts for the real-text workload (default: the bundled demo texts).",
        rich_help_panel=WORKLOADS_PANEL)] = None,
    text_field: in_panel(TextField, WORKLOADS_PANEL) = "text",
    corpus_limit: Annotated[int, typer.Option(
        min=1, help="Texts taken from the corpus.", rich_help_panel=WORKLOADS_PANEL)] = 256,
    text_batch_size: Annotated[int, typer.Option(
        min=1, help="Batch size of the real-text workload.", rich_help_panel=WORKLOADS_PANEL)] = 32,
    text_runs: Annotated[int, typer.Option(
        min=1, help="Timed passes over the corpus.", rich_help_panel=WORKLOADS_PANEL)] = 3,
    warmup: Annotated[int, typer.Option(
        min=0, help="Untimed calls before each measurement (real text: one whole pass when > 0).",
        rich_help_panel=TIMING)] = 2,
    runs: Annotated[int, typer.Option(min=1, help="Timed calls per cell.", rich_help_panel=TIMING)] = 10,
    max_cell_seconds: Annotated[float, typer.Option(
        help=f"Stop a cell's timed calls after this long (but not before {MIN_RUNS} of them).",
        rich_help_panel=TIMING)] = 4.0,
    cold_start: Annotated[bool, typer.Option(
        "--cold-start/--no-cold-start", help="Time a fresh process to its first prediction.",
        rich_help_panel=TIMING)] = True,
    cold_runs: Annotated[int, typer.Option(min=1, help="Cold starts per backend.", rich_help_panel=TIMING)] = 1,
    validation_data: Annotated[Optional[list[str]], typer.Option(
        help="TASK=FILE of labelled examples (repeatable), or 'demo': each backend's accuracy.",
        rich_help_panel=ACCURACY)] = None,
    validation_limit: Annotated[int, typer.Option(
        min=1, help="Examples read per validation file.", rich_help_panel=ACCURACY)] = 500,
    label_field: in_panel(LabelField, ACCURACY) = "label",
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Write the report as JSON (raw latencies).", rich_help_panel=OUTPUT)] = None,
    markdown: Annotated[Optional[Path], typer.Option(
        help="Write the tables as Markdown.", rich_help_panel=OUTPUT)] = None,
    plot: Annotated[Optional[Path], typer.Option(
        help="Write a PNG: latency per sequence length, and speed-ups (needs matplotlib: the bench extra).",
        rich_help_panel=OUTPUT)] = None,
    in_process: Annotated[bool, typer.Option(
        hidden=True, help="Every backend in this process (debugging; not isolated).")] = False,
) -> None:
    """Latency, throughput, memory, cold start and accuracy of PyTorch against ONNX Runtime on one model (and
    sentence-transformers' ONNX backend on the same encoder, where the peer extra is installed)."""
    with user_errors():
        validation = _bench_validation(validation_data)
        inputs = [model, checkpoint, onnx, corpus, *(validation.values() if isinstance(validation, dict) else [])]
        for path in (json_out, markdown, plot):
            if path is not None:
                check_output_file(path, inputs)  # before the bench, not after minutes of it
        if not (json_out or markdown or plot):
            check_stdout("the bench's tables")
        from mtl.bench import report as bench_report
        from mtl.bench.harness import run_bench
        from mtl.bench.plan import BenchOptions, assign_model_folder, parse_ints, plan_bench
        from mtl.cli.tables import print_tables

        checkpoint, onnx = assign_model_folder(model, checkpoint, onnx)
        plan = plan_bench(BenchOptions(
            checkpoint=checkpoint, onnx=onnx, backends=backend, precisions=precision, modes=mode, device=device.value,
            threads=threads, workloads=workload, batch_sizes=parse_ints(batch_sizes, "--batch-sizes"),
            sequence_lengths=parse_ints(seq_lengths, "--seq-lengths"), warmup=warmup, runs=runs,
            max_cell_seconds=max_cell_seconds, corpus=corpus, text_field=text_field, corpus_limit=corpus_limit,
            text_batch_size=text_batch_size, text_runs=text_runs,
            validation_data=validation,
            validation_limit=validation_limit, label_field=label_field, cold_start=cold_start, cold_runs=cold_runs,
            plot=plot, isolate=not in_process,
        ))
        setup_logging(torch_side=False)
        with bench_report.progress_bar(console) as on_progress:
            result = run_bench(plan, on_progress)
        write_bench_outputs(result, json_out, markdown, plot)
        print_tables(*bench_report.rich_tables(result, outcome=False))
        if result.interrupted:
            console.print(f"[yellow]interrupted:[/yellow] kept {len(result.rows)} finished row(s)")
            raise typer.Exit(130)
        if result.failed:
            from mtl.errors import BenchError

            raise BenchError(result.failed)


def _bench_validation(specs: Optional[list[str]]):
    from mtl.bench.workloads import parse_validation_specs

    return parse_validation_specs(specs or [])


def write_bench_outputs(result: Report, json_out: Optional[Path], markdown: Optional[Path],
                         plot: Optional[Path]) -> None:
    """Written whatever happened: an interrupted or failed bench still keeps the rows it finished."""
    from mtl.bench import report as bench_report

    if json_out:
        bench_report.write_json(result, json_out)
    if markdown:
        bench_report.write_markdown(result, markdown)
    if plot:
        from mtl.bench.plot import write_plot

        write_plot(result, plot)
    for path in (json_out, markdown, plot):
        if path:
            console.print(f"wrote [bold]{shown(path)}[/bold]")
