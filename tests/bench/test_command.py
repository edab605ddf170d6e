"""`mtl-onnx bench` as a user runs it: a tiny end-to-end bench with real worker processes, the ONNX Runtime worker's
isolation from torch, one clear line for every bad input, and Ctrl-C keeping the rows already finished."""

import json
import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mtl.bench.backends import peer_available
from mtl.bench.report import SWEEP_HEADERS
from mtl.cli import app
from tests.factory import bench_model, earlier_report, interrupt_second_sweep_cell, small_corpus, tiny_args

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, expected):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert expected in lines[0], lines[0]


@pytest.fixture(scope="module")
def model():
    return bench_model()


@pytest.fixture
def corpus(tmp_path):
    return small_corpus(tmp_path)


@pytest.mark.slow
def test_end_to_end_bench_in_worker_processes(model, corpus, tmp_path):
    checkpoint, onnx = model
    out = tmp_path / "bench.json"
    result = invoke(*tiny_args(checkpoint, onnx, corpus), "--precision", "fp32", "--mode", "per-task,fused",
                    "--threads", 1, "--json", out, "--markdown", tmp_path / "bench.md")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    # PyTorch's fused real text is measured padded to max length and dynamically; the peer has one mode, fused, and
    # runs where the peer extra is installed (the transformers 4.57 line), else the bench says it skipped it
    peer = [("st-fp32", "fused", "synthetic", None), ("st-fp32", "fused", "text", "dynamic")]
    assert sorted((r["backend"], r["mode"], r["workload"], r["padding"]) for r in report["rows"]) == sorted([
        *[(b, m, "synthetic", None) for b in ("torch-fp32", "ort-fp32") for m in ("per-task", "fused")],
        ("torch-fp32", "per-task", "text", "max_length"), ("torch-fp32", "fused", "text", "max_length"),
        ("torch-fp32", "fused", "text", "dynamic"), ("ort-fp32", "per-task", "text", "dynamic"),
        ("ort-fp32", "fused", "text", "dynamic"), *(peer if peer_available() else [])])
    assert all(len(r["latencies_s"]) == (2 if r["workload"] == "synthetic" else 1) for r in report["rows"])
    workers = {w["backend"]: w for w in report["workers"]}
    for row in report["rows"]:  # each row carries its own worker's peak, not the parent's
        assert row["peak_rss_bytes"] == workers[row["backend"]]["peak_rss_bytes"]
    # so the runtime's footprint shows: the ONNX Runtime worker never loads torch, and needs less memory
    assert workers["ort-fp32"]["modules"]["torch"] is False and workers["torch-fp32"]["modules"]["torch"] is True
    assert workers["ort-fp32"]["peak_rss_bytes"] < workers["torch-fp32"]["peak_rss_bytes"]
    if peer_available():
        assert workers["st-fp32"]["modules"] == {"torch": True, "transformers": True, "onnxruntime": True}
    else:
        assert any("the peer (sentence-transformers' ONNX backend, st-*) skipped: not installed" in note
                   for note in report["notes"]), report["notes"]
    assert set(workers["ort-fp32"]) == set(earlier_report()["workers"][0])
    assert "| torch-fp32 | per-task | 2 | 8 |" in (tmp_path / "bench.md").read_text()
    assert "synthetic sweep" in result.output and "real text" in result.output


def test_positional_export_folder_and_cold_start(model, corpus, tmp_path):
    _, onnx = model
    out = tmp_path / "bench.json"
    result = invoke("bench", onnx, "--backend", "ort-int8", "--mode", "fused", "--workload", "synthetic",
                    "--batch-sizes", 1, "--seq-lengths", 8, "--warmup", 0, "--runs", 2, "--threads", 1,
                    "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    [cold] = report["cold_start"]
    assert cold["backend"] == "ort-int8" and cold["peak_rss_bytes"] > 0
    # spawn to first prediction holds the worker's own import, load and predict phases
    assert cold["median_s"] == cold["seconds"][0] > cold["import_s"] + cold["load_s"] + cold["predict_s"] > 0
    assert cold["modules"]["torch"] is False  # the runtime's cold start never imports torch
    assert set(cold) == set(earlier_report()["cold_start"][0])


def test_ort_worker_imports_no_torch(model):
    """The worker entry point, run as the bench runs it, on an ONNX Runtime backend."""
    from mtl.bench.harness import worker_env

    _, onnx = model
    job = {"kind": "bench", "backend": {"engine": "ort", "precision": "fp32", "device": "cpu"}, "threads": 1,
           "checkpoint": None, "onnx": str(onnx), "modes": ["split"], "shapes": [[1, 8]], "vocab_size": 100,
           "warmup": 0, "runs": 1, "max_cell_seconds": 1.0, "text": None, "validation": {}}
    done = subprocess.run([sys.executable, "-m", "mtl.bench.worker"], input=json.dumps(job), capture_output=True,
                          text=True, env=worker_env(1), timeout=120, check=True)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events] == ["loaded", "cell", "row", "done"]
    assert events[-1]["modules"] == {"torch": False, "transformers": False, "onnxruntime": True}


def test_bench_parent_imports_no_torch():
    code = ("import sys; import mtl.cli, mtl.bench.harness, mtl.bench.plan, mtl.bench.report, mtl.bench.plot, "
            "mtl.bench.worker, mtl.bench.engines, mtl.bench.peers; "
            "print('torch' in sys.modules or 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.strip() == "False"


def option_error(result, expected):
    """Refused by the option's own type, as click refuses a bad value: exit 2, the usage, then one `Error:` line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith("Error: ") and expected in last, result.output


@pytest.mark.parametrize("extra, expected", [
    (["--backend", "tensorrt"], "Invalid value for '--backend': unknown backend 'tensorrt'; valid: torch, ort"),
    (["--precision", "int4"], "unknown precision 'int4'; valid: fp32, fp32-opt, int8, int8-plain, fp16, bf16"),
    (["--mode", "pipelined"], "Invalid value for '--mode': unknown mode 'pipelined'; valid: per-task, fused, split"),
    (["--mode", "seed,fused"], "mode 'seed' is now called 'per-task'"),
    (["--workload", "video"], "unknown workload 'video'; valid: synthetic, text"),
    (["--device", "tpu"], "'tpu' is not one of 'cpu', 'cuda'"),
    (["--runs", "0"], "Invalid value for '--runs'"),
    (["--text-runs", "0"], "Invalid value for '--text-runs'"),
    (["--cold-runs", "0"], "Invalid value for '--cold-runs'"),
    (["--warmup", "-1"], "Invalid value for '--warmup'"),
    (["--threads", "0"], "Invalid value for '--threads'"),
])
def test_values_outside_an_options_choices_or_minimum_are_refused_by_the_option(model, corpus, extra, expected):
    checkpoint, onnx = model
    option_error(invoke(*tiny_args(checkpoint, onnx, corpus), *extra), expected)


@pytest.mark.parametrize("extra, expected", [
    (["--backend", "torch", "--precision", "fp32-opt"], "precision 'fp32-opt' is not available for torch"),
    (["--backend", "st", "--precision", "fp16"], "precision 'fp16' is not available for st"),
    (["--backend", "torch-fp16"], "runs on cuda only"),
    (["--backend", "torch-int8", "--device", "cuda"], "backend torch-int8 runs on cpu only"),
    (["--backend", "st", "--device", "cuda"], "backend st runs on cpu only"),
    (["--seq-lengths", "8,4096"], "sequence length 4096 is beyond the model's limit of 130 positions"),
    (["--batch-sizes", "0"], "batch size 0 is outside the bench's limits"),
    (["--batch-sizes", "1,x"], "bad --batch-sizes '1,x'"),
    (["--max-cell-seconds", "nan"], "--max-cell-seconds must be a number in (0, 1e+06], got nan"),
    (["--json", "/dev/null/report.json"], "because /dev/null is a file, not a folder"),
])
def test_bad_choices_and_limits_are_one_line(model, corpus, extra, expected):
    checkpoint, onnx = model
    one_error_line(invoke(*tiny_args(checkpoint, onnx, corpus), *extra), expected)


def test_missing_inputs_are_one_line(model, corpus, tmp_path):
    checkpoint, onnx = model
    one_error_line(invoke(*tiny_args(checkpoint, onnx, tmp_path / "nope.jsonl")), "nope.jsonl: file not found")
    one_error_line(invoke("bench", onnx, "--backend", "torch"), "backend torch needs a checkpoint folder")
    one_error_line(invoke("bench", onnx, "--backend", "st-int8"), "backend st-int8 needs a checkpoint folder")
    one_error_line(invoke("bench", tmp_path), "neither an mtl-onnx checkpoint nor an export folder")
    one_error_line(invoke("bench"), "nothing to benchmark")
    one_error_line(invoke(*tiny_args(checkpoint, onnx, corpus), "--validation-data", "topic=missing.jsonl"),
                   "missing.jsonl: file not found")


def test_missing_dependencies_name_the_extra(model, corpus, tmp_path, monkeypatch):
    import mtl.bench.backends as backends
    import mtl.bench.plan as plan

    checkpoint, onnx = model
    hidden = {"torch", "matplotlib"}
    available = backends.module_available
    fake = lambda name: name not in hidden and available(name)  # noqa: E731
    monkeypatch.setattr(backends, "module_available", fake)
    monkeypatch.setattr(plan, "module_available", fake)
    one_error_line(invoke(*tiny_args(checkpoint, onnx, corpus), "--backend", "torch"),
                   "needs PyTorch and transformers, which are not installed: pip install 'mtl-onnx[train]'")
    one_error_line(invoke(*tiny_args(checkpoint, onnx, corpus), "--backend", "ort", "--plot", tmp_path / "x.png"),
                   "--plot needs matplotlib, which is not installed: pip install 'mtl-onnx[bench]'")
    one_error_line(invoke(*tiny_args(checkpoint, onnx, corpus), "--backend", "ort", "--device", "cuda",
                          "--precision", "fp32"), "pip install 'mtl-onnx[gpu]'")


def test_the_peer_needs_its_extra_when_named_and_is_left_out_with_a_note_otherwise(model, corpus, monkeypatch):
    import mtl.bench.backends as backends
    import mtl.bench.plan as plan
    from mtl.bench.plan import BenchOptions, plan_bench

    checkpoint, onnx = model
    available = backends.module_available
    fake = lambda name: name != "sentence_transformers" and available(name)  # noqa: E731
    monkeypatch.setattr(backends, "module_available", fake)
    monkeypatch.setattr(plan, "module_available", fake)
    one_error_line(invoke(*tiny_args(checkpoint, onnx, corpus), "--backend", "st-int8"),
                   "backend st-int8 needs sentence-transformers' ONNX backend (sentence_transformers is not "
                   "installed): pip install 'mtl-onnx[peer]'")
    skipped = plan_bench(BenchOptions(checkpoint=checkpoint, onnx=onnx, workloads="synthetic", sequence_lengths=(8,)))
    assert [b.engine for b in skipped.backends] == ["torch", "torch", "ort", "ort", "ort"]
    assert any("st-*) skipped" in note and "mtl-onnx[peer]" in note for note in skipped.notes)


def test_ctrl_c_writes_the_finished_rows(model, corpus, tmp_path, monkeypatch):
    checkpoint, onnx = model
    interrupt_second_sweep_cell(monkeypatch)
    out, markdown = tmp_path / "bench.json", tmp_path / "bench.md"
    result = invoke("bench", onnx, "--backend", "ort-fp32", "--mode", "per-task,fused", "--workload", "synthetic",
                    "--batch-sizes", 1, "--seq-lengths", 8, "--warmup", 0, "--runs", 2, "--threads", 1,
                    "--in-process", "--json", out, "--markdown", markdown)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and "interrupted" in result.output
    report = json.loads(out.read_text())
    assert report["interrupted"] is True and [r["mode"] for r in report["rows"]] == ["per-task"]
    assert "| ort-fp32 | per-task | 1 | 8 |" in markdown.read_text()


def test_tables_sent_to_a_file_or_a_pipe_keep_every_figure(model):
    """Off a terminal rich assumes 80 columns, where the sweep table's fifteen columns would each shrink to "0…"."""
    _, onnx = model
    result = invoke("bench", onnx, "--backend", "ort-fp32", "--mode", "fused", "--workload", "synthetic",
                    "--batch-sizes", 1, "--seq-lengths", 8, "--warmup", 0, "--runs", 2, "--threads", 1,
                    "--in-process", "--no-cold-start")
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("│ ort-fp32"))
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    assert cells[:4] == ["ort-fp32", "fused", "1", "8"] and len(cells) == len(SWEEP_HEADERS)
    p50, p90, tail, mean = cells[4:8]
    assert all(re.fullmatch(r"\d+\.\d+", cell) for cell in (p50, p90, mean)) and re.fullmatch(r"max \d+\.\d+", tail)


def test_ctrl_c_in_the_parent_stops_the_worker_and_keeps_rows(model, monkeypatch):
    """Ctrl-C while a worker process is running: the worker is ended, the rows it sent are kept."""
    import mtl.bench.harness as bench_runner
    from mtl.bench.plan import BenchOptions, plan_bench

    _, onnx = model
    original, rows = bench_runner.finish_row, []

    def interrupt_after_first(*args):
        if rows:
            raise KeyboardInterrupt
        rows.append(original(*args))
        return rows[-1]

    monkeypatch.setattr(bench_runner, "finish_row", interrupt_after_first)
    plan = plan_bench(BenchOptions(onnx=onnx, backends="ort-fp32", modes="fused", batch_sizes=(1, 2),
                                   sequence_lengths=(8,), warmup=0, runs=2, workloads="synthetic", threads=1))
    report = bench_runner.run_bench(plan)
    assert report.interrupted and len(report.rows) == 1 and report.cold_start == []


def test_a_failing_backend_keeps_the_rows_before_it(model, tmp_path):
    import shutil

    _, onnx = model
    broken = tmp_path / "onnx"
    shutil.copytree(onnx, broken)
    (broken / "model.int8.onnx").write_bytes(b"not a graph")
    out = tmp_path / "bench.json"
    result = invoke("bench", broken, "--mode", "fused", "--workload", "synthetic", "--batch-sizes", 1,
                    "--seq-lengths", 8, "--warmup", 0, "--runs", 2, "--threads", 1, "--no-cold-start", "--json", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith("error: ort-int8:") and "model.int8.onnx: 11 bytes, but the manifest records" in last
    report = json.loads(out.read_text())
    assert [r["backend"] for r in report["rows"]] == ["ort-fp32", "ort-fp32-opt"] and report["failed"]


@pytest.mark.slow
def test_quickstart_bench_measures_every_backend_and_writes_its_report(model, tmp_path):
    """The quickstart's small bench, for real: what its bench.json says has to mean what the fields claim."""
    from mtl.cli.bench import run_quick_bench

    checkpoint, onnx = model
    run_quick_bench(checkpoint, onnx, tmp_path)
    report = json.loads((tmp_path / "bench.json").read_text())
    assert "## Accuracy" in (tmp_path / "bench.md").read_text()
    rows, settings = report["rows"], report["settings"]
    backends = {"torch-fp32", "ort-fp32", "ort-fp32-opt", "ort-int8"}  # PyTorch, and every variant exported
    assert {(r["backend"], r["mode"], r["workload"]) for r in rows} == {
        (b, m, w) for b in backends for m in ("per-task", "fused") for w in ("synthetic", "text")}
    assert settings["text"]["warmup_passes"] == 1
    for row in rows:
        assert len(row["latencies_s"]) == row["runs"] <= (settings["runs"] if row["workload"] == "synthetic"
                                                          else settings["text"]["runs"])
    _check_speedups_and_flops(rows)
    _check_text_padding(rows, report["model"]["max_length"], settings["text"]["texts"])
    for row in report["accuracy"]:
        assert row["reference"] == "torch-fp32" and row["examples"] == settings["validation"][row["task"]]["examples"]
        if row["backend"] in ("torch-fp32", "ort-fp32", "ort-fp32-opt"):  # the same fp32 weights
            assert row["agreement"] >= 0.99
    assert {(r["backend"], r["task"]) for r in report["accuracy"]} == {(b, t) for b in backends
                                                                      for t in ("topic", "sentiment")}
    assert {c["backend"]: c["modules"]["torch"] for c in report["cold_start"]} == {b: b == "torch-fp32"
                                                                                   for b in backends}


def _check_speedups_and_flops(rows: list[dict]) -> None:
    """A speed-up is PyTorch fp32 per-task routing's p50 over the row's own, for the same workload and shape; per-task
    routing computes the encoder once per task, so it counts more FLOPs than one fused pass. The engine speed-up
    is PyTorch's p50 doing the same work (fused; real text dynamically padded) over the row's own."""
    def shape(row):
        return row["workload"], row["batch_size"], row["sequence_length"]

    baseline = {shape(r): r for r in rows if r["backend"] == "torch-fp32" and r["mode"] == "per-task"}
    same_work = {shape(r): r for r in rows if r["backend"] == "torch-fp32" and r["mode"] == "fused"
                 and r["padding"] in (None, "dynamic")}
    for row in rows:
        assert row["speedup"] == pytest.approx(baseline[shape(row)]["p50_s"] / row["p50_s"])
        if row["mode"] == "fused" and row["padding"] in (None, "dynamic"):
            assert row["engine_speedup"] == pytest.approx(same_work[shape(row)]["p50_s"] / row["p50_s"])
        else:
            assert row["engine_speedup"] is None
        if row["workload"] == "synthetic":
            fused = next(r for r in rows if shape(r) == shape(row) and r["mode"] == "fused")
            assert fused["flops_per_call"] < baseline[shape(row)]["flops_per_call"] < 2 * fused["flops_per_call"]


def _check_text_padding(rows: list[dict], max_length: int, texts: int) -> None:
    """PyTorch pads every text to max_length in per-task routing, and in fused mode both ways; the runtime pads
    each batch to its longest text, as does PyTorch's dynamic row."""
    text = {(r["backend"], r["mode"], r["padding"]): r for r in rows if r["workload"] == "text"}
    assert ("torch-fp32", "fused", "dynamic") in text
    for (backend, mode, padding), row in text.items():
        shapes = row["batch_shapes"]
        assert row["items_per_call"] == texts == sum(count for count, _ in shapes)
        assert row["padded_tokens"] == sum(count * length for count, length in shapes)
        if padding == "max_length":
            assert backend == "torch-fp32" and {length for _, length in shapes} == {max_length}
        else:
            assert padding == "dynamic"
            assert row["padded_tokens"] < text[("torch-fp32", mode, "max_length")]["padded_tokens"]
