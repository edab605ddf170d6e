"""`mtl-onnx bench` and the quickstart's small bench: option parsing and output writing around `mtl.bench`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from mtl.artifacts.reports import check_output_file
from mtl.cli.options import LabelField, TextField, check_stdout, console, setup_logging, shown, user_errors

if TYPE_CHECKING:
    from mtl.bench.records import Report


def run_quick_bench(model_dir: Path, onnx_dir: Path, output: Path, device: str = "cpu") -> None:
    from mtl.bench import report as bench_report
    from mtl.bench.harness import quick_bench

    with bench_report.progress_bar(console) as on_progress:
        result = quick_bench(model_dir, onnx_dir, validation_data="demo", device=device, on_progress=on_progress)
    write_bench_outputs(result, output / "bench.json", output / "bench.md", None)
    for renderable in bench_report.rich_tables(result):
        Console().print(renderable)


def bench(
    model: Annotated[Optional[Path], typer.Argument(
        help="A checkpoint or an export folder (or give both with --checkpoint and --onnx).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="Checkpoint folder: the PyTorch backends and the peer run on it.")] = None,
    onnx: Annotated[Optional[Path], typer.Option(
        "--onnx", help="Export folder: the ONNX Runtime backends run on it.")] = None,
    backend: Annotated[Optional[str], typer.Option(
        help="torch, ort, st (the peer: sentence-transformers' ONNX backend, needs the peer extra), or exact "
             "backends (ort-int8, torch-int8, st-fp32, ...), comma-separated (default: all that can run).")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help="fp32, fp32-opt, int8, int8-plain (ort: int8 without attention fusion, built by the bench), fp16, "
             "bf16, comma-separated (default on cpu: torch fp32,int8; ort fp32,fp32-opt,int8; st fp32,int8; on "
             "cuda: fp32,fp32-opt,fp16).")] = None,
    mode: Annotated[str, typer.Option(
        help="seed (an encoder pass per task; PyTorch pads real text to max length), fused (one pass for every "
             "task; PyTorch's real text is measured padded to max length and dynamically), split; "
             "comma-separated.")] = "seed,fused,split",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(
        help="Threads for each backend (default: the usable cores).")] = None,
    workload: Annotated[str, typer.Option(help="synthetic, text; comma-separated.")] = "synthetic,text",
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes of the synthetic sweep.")] = "1,8,32",
    seq_lengths: Annotated[str, typer.Option(help="Sequence lengths of the synthetic sweep.")] = "16,64,128,256",
    warmup: Annotated[int, typer.Option(
        help="Untimed calls before each measurement (real text: one whole pass when > 0).")] = 2,
    runs: Annotated[int, typer.Option(help="Timed calls per cell.")] = 10,
    max_cell_seconds: Annotated[float, typer.Option(
        help="Stop a cell's timed calls after this long (3 at least).")] = 4.0,
    corpus: Annotated[Optional[Path], typer.Option(
        help="JSONL/CSV texts for the real-text workload (default: the bundled demo texts).")] = None,
    text_field: TextField = "text",
    corpus_limit: Annotated[int, typer.Option(help="Texts taken from the corpus.")] = 256,
    text_batch_size: Annotated[int, typer.Option(help="Batch size of the real-text workload.")] = 32,
    text_runs: Annotated[int, typer.Option(help="Timed passes over the corpus.")] = 3,
    validation_data: Annotated[Optional[list[str]], typer.Option(
        help="TASK=FILE of labelled examples (repeatable), or 'demo': each backend's accuracy.")] = None,
    validation_limit: Annotated[int, typer.Option(help="Examples read per validation file.")] = 500,
    label_field: LabelField = "label",
    cold_start: Annotated[bool, typer.Option(
        "--cold-start/--no-cold-start", help="Time a fresh process to its first prediction.")] = True,
    cold_runs: Annotated[int, typer.Option(help="Cold starts per backend.")] = 1,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Write the report as JSON (raw latencies).")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write the tables as Markdown.")] = None,
    plot: Annotated[Optional[Path], typer.Option(
        help="Write a PNG: latency per sequence length, and speed-ups (needs matplotlib: the bench extra).")] = None,
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

        checkpoint, onnx = assign_model_folder(model, checkpoint, onnx)
        plan = plan_bench(BenchOptions(
            checkpoint=checkpoint, onnx=onnx, backends=backend, precisions=precision, modes=mode, device=device,
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
        for renderable in bench_report.rich_tables(result, outcome=False):
            Console().print(renderable)
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
