"""The bench's PNG: p50 latency against sequence length per backend and mode (one panel per batch size), and
speed-up bars against PyTorch fp32 with per-task routing. matplotlib is optional (`mtl-onnx[bench]`)."""

from __future__ import annotations

import io
from pathlib import Path

from mtl.artifacts.reports import write_output_file
from mtl.bench.backends import INSTALL, text_paddings
from mtl.bench.records import Report, Row
from mtl.bench.stats import geometric_mean
from mtl.errors import MissingDependencyError

MAX_LATENCY_PANELS = 4


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(f"--plot needs matplotlib, which is not installed: {INSTALL['plot']}") from None
    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt

    return plt


def _series_label(row: Row) -> str:
    # PyTorch's real-text "fused" is measured padded two ways: name the padding there, or the two would merge.
    if row.measured.padding and len(text_paddings(row.backend.engine, row.measured.mode)) > 1:
        return row.label
    return f"{row.backend.name} {row.measured.mode}"


def speedup_bars(report: Report) -> dict[str, dict[str, float]]:
    """{"backend mode": {"sweep (geo-mean)": x, "real text": y}} for the rows that have a speed-up."""
    bars: dict[str, dict[str, list[float]]] = {}
    for row in report.rows:
        if row.speedup is None:
            continue
        kind = "sweep (geometric mean)" if row.measured.workload == "synthetic" else "real text"
        bars.setdefault(_series_label(row), {}).setdefault(kind, []).append(row.speedup)
    return {label: {kind: geometric_mean(values) for kind, values in kinds.items()} for label, kinds in bars.items()}


def write_plot(report: Report, path: Path) -> None:
    plt = _pyplot()
    sweep = [r for r in report.rows if r.measured.workload == "synthetic"]
    batches = sorted({r.measured.batch_size for r in sweep})[:MAX_LATENCY_PANELS]
    columns = max(1, len(batches))
    figure = plt.figure(figsize=(5 * columns, 9), layout="constrained")
    grid = figure.add_gridspec(2, columns)
    for index, batch in enumerate(batches):
        panel_rows = [r for r in sweep if r.measured.batch_size == batch]
        _latency_panel(figure.add_subplot(grid[0, index]), panel_rows, batch)
    if not batches:
        figure.add_subplot(grid[0, :]).text(0.5, 0.5, "no synthetic rows", ha="center", va="center")
    _speedup_panel(figure.add_subplot(grid[1, :]), speedup_bars(report))
    figure.suptitle(f"mtl-onnx bench, {report.environment.cpu.model}, "
                    f"{report.settings.threads} thread(s), {report.settings.device}")
    png = io.BytesIO()  # drawn in memory, then published like every report: whole, and where the user pointed
    figure.savefig(png, format="png", dpi=120)
    plt.close(figure)
    write_output_file(Path(path), png.getvalue())


LINE_STYLES = {"fused": "-", "split": "--", "per-task": ":"}


def _latency_panel(axes, rows: list[Row], batch: int) -> None:
    # One colour per backend, one line style per mode: the eye finds "same backend" and "same mode" at once.
    backends = list(dict.fromkeys(row.backend.name for row in rows))
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in rows:
        point = (row.measured.sequence_length, row.summary.p50_s * 1e3)
        series.setdefault((row.backend.name, row.measured.mode), []).append(point)
    for (backend, mode), points in series.items():
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{backend} {mode}",
                  color=f"C{backends.index(backend) % 10}", linestyle=LINE_STYLES.get(mode, "-"))
    axes.set(title=f"batch {batch}", xlabel="sequence length (tokens)", ylabel="p50 latency (ms)", yscale="log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")


def _speedup_panel(axes, bars: dict[str, dict[str, float]]) -> None:
    if not bars:
        axes.text(0.5, 0.5, "no speed-ups: PyTorch fp32 per-task routing was not measured", ha="center", va="center")
        axes.set_axis_off()
        return
    labels = list(bars)
    kinds = sorted({kind for values in bars.values() for kind in values}, reverse=True)
    width = 0.8 / len(kinds)
    for index, kind in enumerate(kinds):
        positions = [i + (index - (len(kinds) - 1) / 2) * width for i in range(len(labels))]
        values = [bars[label].get(kind) or 0.0 for label in labels]
        drawn = axes.bar(positions, values, width, label=kind)
        axes.bar_label(drawn, labels=[f"{v:.2f}×" if v else "" for v in values], fontsize="small")
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    axes.set(ylabel="speed-up vs PyTorch fp32 (per-task routing)", title="speed-up")
    axes.legend()
