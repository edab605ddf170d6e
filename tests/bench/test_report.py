"""Report formats on a real (tiny, in-process) bench: JSON keeps raw latencies, unformatted numbers and the keys of
earlier reports, Markdown has the tables, the PNG is written; and Ctrl-C keeps the finished rows."""

import json

import numpy as np
import pytest

from mtl.bench import report as bench_report
from mtl.bench.backends import peer_available
from mtl.bench.harness import run_bench
from mtl.bench.plan import BenchOptions, plan_bench
from mtl.bench.records import Report
from tests.factory import bench_model, earlier_report, interrupt_second_sweep_cell, small_corpus


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    checkpoint, onnx = bench_model()
    corpus = small_corpus(tmp_path_factory.mktemp("corpus"))
    plan = plan_bench(BenchOptions(
        checkpoint=checkpoint, onnx=onnx, modes="per-task,fused", batch_sizes=(1, 2), sequence_lengths=(8, 16),
        warmup=1, runs=2, corpus=corpus, text_runs=1, text_batch_size=4, threads=1, cold_start=False,
        validation_data="demo", validation_limit=8, isolate=False))
    progress = []
    report = run_bench(plan, lambda label, done, total: progress.append((label, done, total)))
    assert progress[-1][1] == progress[-1][2] == plan.total_units()
    return report


def test_rows_cover_every_backend_mode_and_shape(tiny_report):
    sweep = [r for r in tiny_report.rows if r.measured.workload == "synthetic"]
    combos = {(r.backend.name, r.measured.mode, r.measured.batch_size, r.measured.sequence_length) for r in sweep}
    # torch fp32, int8 and ort fp32, fp32-opt, int8 x per-task, fused; the peer st fp32, int8 x fused (where the peer
    # extra is installed: the transformers 4.57 line); x 4 shapes
    peer = {"st-fp32 fused dynamic", "st-int8 fused dynamic"} if peer_available() else set()
    assert len(combos) == len(sweep) == (5 * 2 + len(peer)) * 4
    text = {r.label for r in tiny_report.rows if r.measured.workload == "text"}
    assert text == {f"torch-{p} {m}" for p in ("fp32", "int8") for m in ("per-task max_length", "fused max_length",
                                                                          "fused dynamic")} | {
        f"ort-{p} {m} dynamic" for p in ("fp32", "fp32-opt", "int8") for m in ("per-task", "fused")} | peer
    for row in tiny_report.rows:
        assert row.threads == 1 and row.provider and row.versions
        assert row.flops_per_call > 0 and row.speedup is not None  # PyTorch per-task rows exist for every shape
        assert (row.engine_speedup is None) == (row.measured.mode == "per-task" or row.measured.padding == "max_length")
    # every backend, PyTorch int8 and the peer included, has its accuracy against PyTorch fp32
    assert {(r.backend, r.task) for r in tiny_report.accuracy} == {
        (b.name, t) for b in {r.backend for r in tiny_report.rows} for t in ("topic", "sentiment")}
    for row in tiny_report.accuracy:
        assert row.reference == "torch-fp32" and row.agreement is not None
        if row.backend == "st-fp32":  # the same encoder weights and heads as PyTorch fp32
            assert row.agreement == 1.0
    assert tiny_report.settings.text.warmup_passes == 1 and tiny_report.settings.text.warmup_batches == 2
    assert not tiny_report.interrupted and tiny_report.failed is None


def test_json_has_the_keys_of_earlier_reports(tiny_report, tmp_path):
    """Reports written before rows were typed records must read new reports too."""
    path = tmp_path / "out" / "bench.json"
    bench_report.write_json(tiny_report, path)
    data, earlier = json.loads(path.read_text()), earlier_report()
    assert list(data) == list(earlier)
    for section in ("environment", "model"):
        assert set(data[section]) == set(earlier[section]), section
    # new fields sit beside the earlier ones, never in their place
    assert set(data["settings"]) - set(earlier["settings"]) == {"engine_speedup_baseline"}
    assert set(data["settings"]) >= set(earlier["settings"])
    assert set(data["environment"]["cpu"]) == set(earlier["environment"]["cpu"])
    assert set(data["settings"]["text"]) - set(earlier["settings"]["text"]) == {"warmup_passes"}
    assert set(data["settings"]["text"]) >= set(earlier["settings"]["text"])
    for workload in ("synthetic", "text"):
        keys = [set(r) for r in data["rows"] if r["workload"] == workload]
        old = set(next(r for r in earlier["rows"] if r["workload"] == workload))
        assert keys and all(k - old == {"engine_speedup", "engine_baseline"} and k >= old for k in keys)
    assert set(data["accuracy"][0]) == set(earlier["accuracy"][0])
    assert set(data["backends"][0]) == set(earlier["backends"][0])


def test_json_keeps_raw_latencies_and_unformatted_numbers(tiny_report, tmp_path):
    path = tmp_path / "bench.json"
    bench_report.write_json(tiny_report, path)
    data = json.loads(path.read_text())
    for row in data["rows"]:
        assert all(isinstance(t, float) for t in row["latencies_s"])
        assert row["p50_s"] == pytest.approx(float(np.median(row["latencies_s"])))  # a number, not "1.23 ms"
        assert row["throughput_per_s"] == pytest.approx(row["items_per_call"] / np.mean(row["latencies_s"]))
    assert Report.from_dict(data) == tiny_report  # reads back as it was


def test_markdown_has_one_table_per_section(tiny_report, tmp_path):
    path = tmp_path / "bench.md"
    bench_report.write_markdown(tiny_report, path)
    text = path.read_text()
    assert "| backend | mode | batch | seq | p50 | p90 | p99 / max |" in text
    assert "| vs baseline | vs torch |" in text  # both speed-ups, side by side, in both tables
    assert "## Real text" in text and "## Accuracy" in text and "## Environment" in text
    assert text.count("| ort-int8 | per-task |") == 5  # 4 shapes + real text
    assert "| torch-fp32 | fused | dynamic |" in text and ("| st-int8 | fused |" in text) == peer_available()
    assert "Cold start" not in text  # not measured in-process
    # two runs per cell: too few for a p99, so the column holds the slowest run and says so
    assert "| max " in text and "p99 / max: the p99 where a cell has at least 50 timed runs" in text
    assert "## Reading the tables" in text and "fastest on real text:" in text


def test_rich_tables_render(tiny_report):
    from rich.console import Console

    console = Console(record=True, width=200)
    for renderable in bench_report.rich_tables(tiny_report):
        console.print(renderable)
    out = console.export_text()
    assert "ort-fp32-opt" in out and "vs torch" in out and "p99 / max" in out and "fastest on real text" in out


def test_png_is_written(tiny_report, tmp_path):
    from mtl.bench.plot import write_plot

    path = tmp_path / "bench.png"
    write_plot(tiny_report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_ctrl_c_in_a_backend_keeps_the_finished_rows(monkeypatch):
    checkpoint, onnx = bench_model()
    interrupt_second_sweep_cell(monkeypatch)
    plan = plan_bench(BenchOptions(onnx=onnx, backends="ort-fp32", modes="fused", batch_sizes=(1, 2),
                                   sequence_lengths=(8,), warmup=0, runs=2, workloads="synthetic", threads=1,
                                   isolate=False))
    report = run_bench(plan)
    assert report.interrupted and len(report.rows) == 1 and report.rows[0].measured.batch_size == 1


def test_the_tables_show_a_corpus_path_escaped_and_not_as_markup():
    """The corpus path (and every note) comes from the user: an escape sequence in it reaches the terminal escaped,
    and "[red]" stays text instead of colouring (and vanishing from) the title."""
    import io

    from rich.console import Console

    hostile = "/data/\x1b[2J\x1b]0;owned\x07\u202e[red]x.jsonl"
    data = earlier_report()
    data["settings"]["text"]["source"] = hostile
    data["notes"] = [f"the corpus {hostile} is small"]
    shown = io.StringIO()
    for renderable in bench_report.rich_tables(Report.from_dict(data)):
        Console(file=shown, width=400).print(renderable)
    text = shown.getvalue()
    assert not any(char in text for char in "\x1b\x07\u202e"), repr(text)
    assert text.count("/data/\\x1b[2J\\x1b]0;owned\\x07\\u202e[red]x.jsonl") == 2
