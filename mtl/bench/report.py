"""Rendering a bench report (the dict `run_bench` returns): rich tables for the terminal, JSON (raw latencies,
numbers as measured), Markdown, and a progress callback for the CLI. The PNG lives in `plot`.

Numbers are formatted here and nowhere else. One table model (`sections`) feeds both rich and Markdown, so the two
always show the same columns.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

Section = tuple[str, list[str], list[list[str]]]  # title, column headers, rows of cells

# Short headers: fourteen columns have to fit a terminal; the section titles carry the units.
SWEEP_HEADERS = ["backend", "mode", "batch", "seq", "p50", "p90", "p99", "mean", "runs", "seq/s", "speed-up",
                 "GFLOP/s", "peak RSS", "size"]
TEXT_HEADERS = ["backend", "mode", "padding", "texts", "tokens", "p50 s", "texts/s", "speed-up", "GFLOP/s",
                "peak RSS"]
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


def _backend_label(row: dict[str, Any]) -> str:
    label = row["backend"]
    return label if row.get("device", "cpu") == "cpu" else f"{label} ({row['device']})"


def sweep_section(report: dict[str, Any]) -> Section:
    rows = [r for r in report["rows"] if r["workload"] == "synthetic"]
    rows.sort(key=lambda r: (r["batch_size"], r["sequence_length"]))
    cells = [[_backend_label(r), r["mode"], str(r["batch_size"]), str(r["sequence_length"]), milliseconds(r["p50_s"]),
              milliseconds(r["p90_s"]), milliseconds(r["p99_s"]), milliseconds(r["mean_s"]), str(r["runs"]),
              number(r["throughput_per_s"]), ratio(r.get("speedup")), number(r["gflops_per_s"]),
              mebibytes(r.get("peak_rss_bytes")), mebibytes(r.get("artifact_bytes"))] for r in rows]
    title = "synthetic sweep: ms per call; speed-up against PyTorch fp32 with seed routing, same shape"
    return title, SWEEP_HEADERS, cells


def text_section(report: dict[str, Any]) -> Section:
    rows = [r for r in report["rows"] if r["workload"] == "text"]
    cells = [[_backend_label(r), r["mode"], r.get("padding") or "-", str(r["items_per_call"]),
              f"{r['padded_tokens']:,}", f"{r['p50_s']:.3f}", number(r["throughput_per_s"]), ratio(r.get("speedup")),
              number(r["gflops_per_s"]), mebibytes(r.get("peak_rss_bytes"))] for r in rows]
    settings = report["settings"].get("text") or {}
    title = (f"real text: every task for each of {settings.get('texts', '?')} texts ({settings.get('source', '')}); "
             f"seconds per pass, padded tokens per pass")
    return title, TEXT_HEADERS, cells


def cold_section(report: dict[str, Any]) -> Section:
    cells = [[_backend_label(r), seconds_text(r["median_s"]), seconds_text(r["import_s"]), seconds_text(r["load_s"]),
              seconds_text(r["predict_s"]), mebibytes(r.get("peak_rss_bytes")),
              "yes" if r.get("modules", {}).get("torch") else "no"] for r in report["cold_start"]]
    return "cold start: a new process from spawn to its first prediction (median)", COLD_HEADERS, cells


def accuracy_section(report: dict[str, Any]) -> Section:
    rows = report["accuracy"]
    reference = rows[0]["reference"] if rows else ""
    cells = [[r["backend"], r["task"], str(r["examples"]), percent(r["accuracy"]),
              "-" if r["delta_points"] is None else f"{r['delta_points']:+.2f}", percent(r["agreement"])]
             for r in rows]
    return f"accuracy on validation data (Δ and agreement against {reference})", ACCURACY_HEADERS, cells


def environment_lines(report: dict[str, Any]) -> list[str]:
    env, settings = report["environment"], report["settings"]
    cpu = env["cpu"]
    lines = [
        f"CPU: {cpu['model']} ({cpu['architecture']}), {cpu['physical_cores'] or '?'} physical / "
        f"{cpu['logical_cores']} logical cores, {cpu['usable_cores']} usable; flags: {', '.join(cpu['flags']) or '-'}",
        f"threads per backend: {settings['threads']}; device: {settings['device']}; "
        f"{'one process per backend' if settings['isolated'] else 'all backends in one process (not isolated)'}",
        "GPU: " + ("; ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in env["gpus"]) or "none"),
        "versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "ONNX Runtime providers: " + (", ".join(env["execution_providers"]) or "-"),
        "load average at start: " + (", ".join(map(str, env.get("load_average_at_start") or [])) or "-"),
        f"warm-up {settings['warmup']}, up to {settings['runs']} timed runs per cell (at least "
        f"{settings['min_runs']}, {settings['max_cell_seconds']:g} s budget per cell)",
    ]
    return lines


def sections(report: dict[str, Any]) -> list[Section]:
    """The non-empty tables of a report, in reading order."""
    built = [sweep_section(report), text_section(report), cold_section(report), accuracy_section(report)]
    return [section for section in built if section[2]]


def status_lines(report: dict[str, Any], outcome: bool = True) -> list[str]:
    """Notes, and (with `outcome`) whether the bench was interrupted or failed."""
    lines = [f"note: {note}" for note in report["notes"]]
    if not outcome:
        return lines
    if report["interrupted"]:
        lines.append(f"interrupted: {len(report['rows'])} finished row(s) kept")
    if report["failed"]:
        lines.append(f"failed: {report['failed']}")
    return lines


def rich_tables(report: dict[str, Any], outcome: bool = True) -> list:
    """Renderables for `Console.print`: one table per section, then the environment and notes (and, with
    `outcome`, a line saying the bench was interrupted or failed: the CLI says that itself)."""
    from rich.table import Table
    from rich.text import Text

    out: list = []
    for title, headers, rows in sections(report):
        table = Table(title=title, title_justify="left")
        for index, header in enumerate(headers):
            table.add_column(header, justify="left" if index < 2 or header == "padding" else "right")
        for row in rows:
            table.add_row(*row)
        out.append(table)
    out += [Text(line, style="dim") for line in environment_lines(report)]
    out += [Text(line, style="yellow") for line in status_lines(report, outcome)]
    return out


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# mtl-onnx bench ({report['created']})", ""]
    if report["interrupted"] or report["failed"]:
        lines += [f"**{line}**" for line in status_lines(report) if not line.startswith("note:")] + [""]
    for title, headers, rows in sections(report):
        lines += [f"## {title[0].upper()}{title[1:]}", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join(" --- " if i < 2 else " ---: " for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    lines += ["## Environment", ""] + [f"- {line}" for line in environment_lines(report)]
    notes = [line for line in status_lines(report) if line.startswith("note:")]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {line[len('note: '):]}" for line in notes]
    return "\n".join(lines) + "\n"


def write_json(report: dict[str, Any], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_markdown(report: dict[str, Any], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(report), encoding="utf-8")


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
