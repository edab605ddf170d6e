"""Report formats on a real (tiny, in-process) bench: JSON keeps raw latencies and unformatted numbers, Markdown
has the tables, the PNG is written; and the Python entry points (plan, quick_bench, Ctrl-C) behave."""

import json

import pytest

from mtl.bench import report as bench_report
from mtl.bench.harness import quick_bench, run_bench
from mtl.bench.plan import BenchOptions, plan_bench
from tests.bench_fixtures import interrupt_second_sweep_cell, small_corpus, tiny_model


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    checkpoint, onnx = tiny_model()
    corpus = small_corpus(tmp_path_factory.mktemp("corpus"))
    plan = plan_bench(BenchOptions(
        checkpoint=checkpoint, onnx=onnx, modes="seed,fused", batch_sizes=(1, 2), sequence_lengths=(8, 16),
        warmup=1, runs=2, corpus=corpus, text_runs=1, text_batch_size=4, threads=1, cold_start=False,
        validation_data="demo", validation_limit=8, isolate=False))
    progress = []
    report = run_bench(plan, lambda label, done, total: progress.append((label, done, total)))
    assert progress[-1][1] == progress[-1][2] == plan.total_units()
    return report


def test_rows_cover_every_backend_mode_and_shape(tiny_report):
    sweep = [r for r in tiny_report["rows"] if r["workload"] == "synthetic"]
    combos = {(r["backend"], r["mode"], r["batch_size"], r["sequence_length"]) for r in sweep}
    assert len(combos) == len(sweep) == 4 * 2 * 4  # torch, ort fp32, fp32-opt, int8 x seed, fused x 4 shapes
    text = [r for r in tiny_report["rows"] if r["workload"] == "text"]
    assert len(text) == 8 and {r["padding"] for r in text} == {"max_length", "dynamic"}
    for row in tiny_report["rows"]:
        assert row["threads"] == 1 and row["provider"] and row["versions"]
        assert row["flops_per_call"] > 0 and row["speedup"] is not None  # PyTorch seed rows exist for every shape
    assert {r["task"] for r in tiny_report["accuracy"]} == {"topic", "sentiment"}
    assert not tiny_report["interrupted"] and tiny_report["failed"] is None


def test_json_keeps_raw_latencies_and_unformatted_numbers(tiny_report, tmp_path):
    path = tmp_path / "out" / "bench.json"
    bench_report.write_json(tiny_report, path)
    data = json.loads(path.read_text())
    assert data["format"] == "mtl-onnx/bench"
    row = data["rows"][0]
    assert len(row["latencies_s"]) == 2 and all(isinstance(t, float) for t in row["latencies_s"])
    assert isinstance(row["p50_s"], float) and isinstance(row["throughput_per_s"], float)
    for key in ("backend", "precision", "provider", "threads", "batch_size", "sequence_length", "versions", "mode"):
        assert key in row
    env = data["environment"]
    assert env["cpu"]["logical_cores"] and "onnxruntime" in env["versions"] and env["execution_providers"]


def test_markdown_has_one_table_per_section(tiny_report, tmp_path):
    path = tmp_path / "bench.md"
    bench_report.write_markdown(tiny_report, path)
    text = path.read_text()
    assert "| backend | mode | batch | seq | p50 |" in text
    assert "## Real text" in text and "## Accuracy" in text and "## Environment" in text
    assert text.count("| ort-int8 | seed |") == 5  # 4 shapes + real text
    assert "Cold start" not in text  # not measured in-process


def test_rich_tables_render(tiny_report):
    from rich.console import Console

    console = Console(record=True, width=200)
    for renderable in bench_report.rich_tables(tiny_report):
        console.print(renderable)
    assert "ort-fp32-opt" in console.export_text()


def test_png_is_written(tiny_report, tmp_path):
    from mtl.bench.plot import write_plot

    path = tmp_path / "bench.png"
    write_plot(tiny_report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_ctrl_c_in_a_backend_keeps_the_finished_rows(monkeypatch):
    checkpoint, onnx = tiny_model()
    interrupt_second_sweep_cell(monkeypatch)
    plan = plan_bench(BenchOptions(onnx=onnx, backends="ort-fp32", modes="fused", batch_sizes=(1, 2),
                                   sequence_lengths=(8,), warmup=0, runs=2, workloads="synthetic", threads=1,
                                   isolate=False))
    report = run_bench(plan)
    assert report["interrupted"] and len(report["rows"]) == 1 and report["rows"][0]["batch_size"] == 1


def test_quick_bench_plans_a_small_sweep_and_real_text(monkeypatch):
    import mtl.bench.harness as runner

    checkpoint, onnx = tiny_model()
    monkeypatch.setattr(runner, "run_bench", lambda plan, on_progress=None: plan)
    plan = quick_bench(checkpoint, onnx, validation_data="demo")
    assert [(s.batch, s.sequence) for s in plan.shapes] == [(1, 32), (1, 128), (8, 32), (8, 128)]
    assert plan.text and len(plan.text["texts"]) == 128 and set(plan.validation) == {"topic", "sentiment"}
    assert [b.name for b in plan.backends] == ["torch-fp32", "ort-fp32", "ort-fp32-opt", "ort-int8"]
    assert plan.modes["ort-int8"] == ("seed", "fused")
