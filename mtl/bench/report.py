"""Rendering a bench report (the `records.Report` that `run_bench` returns): rich tables for the terminal, JSON
(raw latencies, numbers as measured), Markdown, and a progress callback for the CLI. The PNG lives in `plot`.

Numbers are formatted here and nowhere else. One table model (`sections`) feeds both rich and Markdown, so the two
always show the same columns.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from mtl.artifacts.jsonfile import write_json as write_json_file
from mtl.artifacts.reports import write_output_file
from mtl.bench.backends import PLAIN_INT8, Backend
from mtl.bench.records import Report, Row
from mtl.bench.stats import P99_MIN_RUNS, tail_latency
from mtl.text import printable

Section = tuple[str, list[str], list[list[str]]]  # title, column headers, rows of cells

# Short headers: fifteen columns have to fit a terminal; the section titles and `legend_lines` say the rest.
SWEEP_HEADERS = ["backend", "mode", "batch", "seq", "p50", "p90", "p99 / max", "mean", "runs", "seq/s",
                 "vs baseline", "vs torch", "GFLOP/s", "peak RSS", "size"]
TEXT_HEADERS = ["backend", "mode", "padding", "texts", "tokens", "p50 s", "texts/s", "vs baseline", "vs torch",
                "GFLOP/s", "peak RSS"]
COLD_HEADERS = ["backend", "start to first prediction", "import", "load", "predict", "peak RSS", "imports torch"]
ACCURACY_HEADERS = ["backend", "task", "examples", "accuracy %", "Δ points", "agreement %"]


def milliseconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value = seconds * 1e3
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def seconds_text(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def mebibytes(size: int | None) -> str:
    return "-" if not size else f"{size / 2**20:,.0f} MiB" if size >= 2**20 else f"{size / 2**10:,.0f} KiB"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _backend_label(backend: Backend) -> str:
    return backend.name if backend.device == "cpu" else f"{backend.name} ({backend.device})"


def _rows(report: Report, workload: str) -> list[Row]:
    return [row for row in report.rows if row.measured.workload == workload]


def sweep_section(report: Report) -> Section:
    rows = sorted(_rows(report, "synthetic"), key=lambda r: (r.measured.batch_size, r.measured.sequence_length))
    cells = []
    for row in rows:
        measured, summary = row.measured, row.summary
        cells.append([
            _backend_label(row.backend), measured.mode, str(measured.batch_size), str(measured.sequence_length),
            milliseconds(summary.p50_s), milliseconds(summary.p90_s), tail_cell(row), milliseconds(summary.mean_s),
            str(summary.runs), number(summary.throughput_per_s), ratio(row.speedup), ratio(row.engine_speedup),
            number(row.gflops_per_s), mebibytes(row.peak_rss_bytes), mebibytes(measured.artifact_bytes)])
    return "synthetic sweep: ms per call, full-length rows", SWEEP_HEADERS, cells


def tail_cell(row: Row) -> str:
    """The p99 where the row has enough runs for one; otherwise its slowest run, marked as such."""
    label, seconds = tail_latency(row)
    return milliseconds(seconds) if label == "p99" else f"max {milliseconds(seconds)}"


def text_section(report: Report) -> Section:
    cells = [[_backend_label(r.backend), r.measured.mode, r.measured.padding or "-", str(r.measured.items_per_call),
              f"{r.measured.padded_tokens:,}", f"{r.summary.p50_s:.3f}", number(r.summary.throughput_per_s),
              ratio(r.speedup), ratio(r.engine_speedup), number(r.gflops_per_s), mebibytes(r.peak_rss_bytes)]
             for r in _rows(report, "text")]
    text = report.settings.text
    title = (f"real text: every task for each of {text.texts if text else '?'} texts ({text.source if text else ''}); "
             f"seconds per pass, padded tokens per pass")
    return title, TEXT_HEADERS, cells


def cold_section(report: Report) -> Section:
    cells = [[_backend_label(c.backend), seconds_text(c.median_s), seconds_text(c.import_s), seconds_text(c.load_s),
              seconds_text(c.predict_s), mebibytes(c.peak_rss_bytes), "yes" if c.modules.get("torch") else "no"]
             for c in report.cold_start]
    return "cold start: a new process from spawn to its first prediction (median)", COLD_HEADERS, cells


def accuracy_section(report: Report) -> Section:
    rows = report.accuracy
    reference = rows[0].reference if rows else ""
    cells = [[r.backend, r.task, str(r.examples), percent(r.accuracy),
              "-" if r.delta_points is None else f"{r.delta_points:+.2f}", percent(r.agreement)] for r in rows]
    return f"accuracy on validation data (Δ and agreement against {reference})", ACCURACY_HEADERS, cells


def environment_lines(report: Report) -> list[str]:
    env, settings = report.environment, report.settings
    cpu = env.cpu
    lines = [
        f"CPU: {cpu.model} ({cpu.architecture}), {cpu.physical_cores or '?'} physical / "
        f"{cpu.logical_cores} logical cores, {cpu.usable_cores} usable; flags: {', '.join(cpu.flags) or '-'}",
        f"threads per backend: {settings.threads}; device: {settings.device}; "
        f"{'one process per backend' if settings.isolated else 'all backends in one process (not isolated)'}",
        "GPU: " + ("; ".join(f"{g.name} (driver {g.driver}, {g.memory})" for g in env.gpus) or "none"),
        "versions: " + ", ".join(f"{k} {v}" for k, v in env.versions.items()),
        "ONNX Runtime providers: " + (", ".join(env.execution_providers) or "-"),
        "rows ran on: " + (providers_text(report) or "-"),
        "load average at start: " + (", ".join(map(str, env.load_average_at_start or [])) or "-"),
        f"warm-up {settings.warmup}, up to {settings.runs} timed runs per cell (at least "
        f"{settings.min_runs}, {settings.max_cell_seconds:g} s budget per cell)",
    ]
    text = settings.text
    if text:
        warmup = (f"{text.warmup_passes} whole pass(es)" if text.warmup_passes is not None
                  else f"{text.warmup_batches} batch(es)")
        lines.append(f"real text: warm-up {warmup} over the corpus, then up to {text.runs} timed passes")
    return lines


def providers_text(report: Report) -> str:
    """Each backend's execution provider as its rows recorded it: what its sessions reported, not what was asked."""
    ran: dict[str, dict[str, None]] = {}
    for row in report.rows:
        ran.setdefault(_backend_label(row.backend), {})[row.provider or "?"] = None
    return "; ".join(f"{label}: {', '.join(providers)}" for label, providers in ran.items())


def legend_lines(report: Report) -> list[str]:
    """What the speed-up and tail columns measure, and the fastest real-text row's two speed-ups side by side."""
    lines = [
        "vs baseline: speed-up over PyTorch fp32 with per-task routing (an encoder pass per task; real text "
        "padded to max length), same workload and shape",
        "vs torch: engine speed-up on the same work, over the fastest PyTorch row of the same workload and shape "
        "that runs one encoder pass (real text: length-sorted, each batch padded to its longest row); '-' for "
        "rows doing other work; the JSON names that row in engine_baseline",
        f"p99 / max: the p99 where a cell has at least {P99_MIN_RUNS} timed runs; with fewer it is the slowest run, "
        f"shown as 'max'",
    ]
    text = [r for r in _rows(report, "text") if r.engine_speedup is not None]
    if text:
        best = min(text, key=lambda r: r.summary.p50_s)
        lines.append(f"fastest on real text: {best.label}, {ratio(best.speedup)} over PyTorch's per-task routing, "
                     f"{ratio(best.engine_speedup)} over PyTorch doing the same work ({best.engine_baseline})")
    recipes = int8_recipe_ratios(report)
    if recipes:
        lines.append(f"ort-int8 over ort-{PLAIN_INT8} (the previous int8 recipe), p50 over p50 in this run: "
                     + ", ".join(f"{cell} {ratio(value)}" for cell, value in recipes.items()))
    return lines


def int8_recipe_ratios(report: Report) -> dict[str, float]:
    """Per synthetic cell both ran ("fused 1x32"): ort-int8-plain's p50 over ort-int8's, the speed-up of the
    export's int8 over the previous recipe, measured in the same run."""
    p50 = {}
    for row in _rows(report, "synthetic"):
        if row.backend.engine == "ort" and row.backend.precision in ("int8", PLAIN_INT8):
            cell = f"{row.measured.mode} {row.measured.batch_size}x{row.measured.sequence_length}"
            p50.setdefault(cell, {})[row.backend.precision] = row.summary.p50_s
    return {cell: both[PLAIN_INT8] / both["int8"] for cell, both in p50.items() if len(both) == 2 and both["int8"] > 0}


def sections(report: Report) -> list[Section]:
    """The non-empty tables of a report, in reading order."""
    built = [sweep_section(report), text_section(report), cold_section(report), accuracy_section(report)]
    return [section for section in built if section[2]]


def status_lines(report: Report, outcome: bool = True) -> list[str]:
    """Notes, and (with `outcome`) whether the bench was interrupted or failed."""
    lines = [f"note: {note}" for note in report.notes]
    if not outcome:
        return lines
    if report.interrupted:
        lines.append(f"interrupted: {len(report.rows)} finished row(s) kept")
    if report.failed:
        lines.append(f"failed: {report.failed}")
    return lines


def _text_column(index: int, header: str) -> bool:
    """Left-aligned in both renderings: the columns of names, not numbers."""
    return index < 2 or header == "padding"


def rich_tables(report: Report, outcome: bool = True) -> list:
    """Renderables for `Console.print`: one table per section, then the environment and notes (and, with
    `outcome`, a line saying the bench was interrupted or failed: the CLI says that itself)."""
    from rich.table import Table
    from rich.text import Text

    # Every string as Text, escaped: titles and cells hold paths and names from the user's files (a corpus named
    # "[red]x" or holding an escape sequence), which rich would otherwise read as markup and a terminal act on.
    out: list = []
    for title, headers, rows in sections(report):
        table = Table(title=Text(printable(title)), title_justify="left")
        for index, header in enumerate(headers):
            table.add_column(header, justify="left" if _text_column(index, header) else "right")
        for row in rows:
            table.add_row(*(Text(printable(str(cell))) for cell in row))
        out.append(table)
    if report.rows:
        out += [Text(printable(line)) for line in legend_lines(report)]
    out += [Text(printable(line), style="dim") for line in environment_lines(report)]
    out += [Text(printable(line), style="yellow") for line in status_lines(report, outcome)]
    return out


def to_markdown(report: Report) -> str:
    lines = [f"# mtl-onnx bench ({report.created})", ""]
    if report.interrupted or report.failed:
        lines += [f"**{line}**" for line in status_lines(report) if not line.startswith("note:")] + [""]
    for title, headers, rows in sections(report):
        lines += [f"## {title[0].upper()}{title[1:]}", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join(" --- " if _text_column(i, h) else " ---: " for i, h in enumerate(headers)) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    if report.rows:
        lines += ["## Reading the tables", ""] + [f"- {line}" for line in legend_lines(report)] + [""]
    lines += ["## Environment", ""] + [f"- {line}" for line in environment_lines(report)]
    notes = [line for line in status_lines(report) if line.startswith("note:")]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {line[len('note: '):]}" for line in notes]
    return "\n".join(lines) + "\n"


def write_json(report: Report, path: Path) -> None:
    """The whole report or nothing, never NaN; where the user pointed (a FIFO or /dev/stdout is written through)."""
    write_json_file(path, report.to_dict())


def write_markdown(report: Report, path: Path) -> None:
    write_output_file(path, to_markdown(report))


@contextlib.contextmanager
def progress_bar(console) -> Iterator:
    """A rich progress bar, and the callback that `run_bench` drives it with."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=console, transient=True)
    bar = progress.add_task("starting", total=None)

    def update(label: str, done: int, total: int) -> None:
        progress.update(bar, description=label, completed=done, total=total)

    with progress:
        yield update
