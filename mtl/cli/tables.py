"""Rich tables the CLI prints (no torch: the ONNX paths use them too): per-task metrics, and the export summary
(every graph file with its size and how it compared with PyTorch; each variant's accuracy on real data), and how
every table is printed whole, on a terminal or not.

Every string that comes from a model folder, a data file or the command line (titles, task names, file names)
goes in as `_shown`: escaped by `mtl.text.printable` and never read as rich markup."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from mtl.evaluate import METRIC_NAMES
from mtl.text import printable

# Columns a table may take in a file or a pipe: more than any table here needs, so its content alone sets its width.
UNBOUNDED_WIDTH = 10_000


def _shown(value: object) -> Text:
    return Text(printable(str(value)))


def print_tables(*renderables, console: Console | None = None) -> None:
    """Tables and lines of text, on stdout unless `console` is given. On a terminal they fit its width. In a file
    or a pipe rich would assume 80 columns and squeeze a wide table until every number reads "0…": there a table is
    as wide as its content, and a line of text is not wrapped."""
    console = console or Console()
    for renderable in renderables:
        if console.is_terminal:
            console.print(renderable)
        elif isinstance(renderable, Table):
            options = console.options.update_width(UNBOUNDED_WIDTH)
            renderable.width = Measurement.get(console, options, renderable).maximum
            console.print(renderable, crop=False)
        else:
            console.print(renderable, soft_wrap=True)


def metrics_table(title: str, per_task: dict[str, dict[str, float]]) -> Table:
    """Accuracy, macro-F1 and macro-recall per task, in percent."""
    table = Table(title=_shown(title))
    table.add_column("task")
    for name in METRIC_NAMES:
        table.add_column(name.replace("_", "-"), justify="right")
    for task, values in per_task.items():
        table.add_row(_shown(task), *(f"{100 * values[m]:.2f}" for m in METRIC_NAMES))
    return table


def graphs_table(result) -> Table:
    variants = result.manifest.variants
    table = Table(title=_shown(f"export: {result.output}"), caption=_shown(_caption(variants)))
    for name, justify in (("graph", "left"), ("variant", "left"), ("file", "left"), ("size", "right"),
                          ("max |diff|", "right")):
        table.add_column(name, justify=justify)
    for row in result.rows:
        table.add_row(_shown(row.graph), _shown(row.precision), _shown(row.file + (" (shared)" if row.shared else "")),
                      _size(row.size_bytes), "-" if row.max_abs_diff is None else f"{row.max_abs_diff:.1e}")
    return table


def _caption(variants) -> str:
    parts = []
    for precision, variant in variants.items():
        parity = variant.validation.parity  # every variant an export builds has one
        check = f"allclose atol {parity.tolerance.atol:g}" if parity.tolerance else "shapes, finite"
        parts.append(f"{precision}: {check} on {len(parity.cases)} shapes, passed")
    return "max |diff| vs PyTorch; " + "; ".join(parts)


def real_data_table(result) -> Table | None:
    """Each variant's accuracy and macro-F1 per task on the labelled data, and the int8 status."""
    variants = result.manifest.variants
    if not any(v.validation.real_data for v in variants.values()):
        return None
    status = variants["int8"].validation.status if "int8" in variants else None
    table = Table(title=_shown("on labelled data" + (f" (int8: {status})" if status else "")),
                  caption="accuracy / macro-F1 in %; other variants: change in points, argmax agreement with fp32")
    table.add_column("task")
    table.add_column("examples", justify="right")
    for precision in variants:
        table.add_column(precision, justify="right")
    for task in variants["fp32"].validation.real_data:
        figures = {p: v.validation.real_data[task] for p, v in variants.items()}
        cells = [_shown(task), str(figures["fp32"].examples)]
        for precision, f in figures.items():
            cell = f"{100 * f.accuracy:.1f} / {100 * f.macro_f1:.1f}"
            if precision != "fp32":
                drops = f.drop_points
                agreement = 100 * f.agreement_with_fp32
                cell += f" ({-drops['accuracy']:+.1f} / {-drops['macro_f1']:+.1f}, {agreement:.1f}%)"
            cells.append(cell)
        table.add_row(*cells)
    return table


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
