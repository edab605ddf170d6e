"""`mtl-onnx bench` as a user runs it: a tiny end-to-end bench with real worker processes, the ONNX Runtime worker's
isolation from torch, one clear line for every bad input, and Ctrl-C keeping the rows already finished."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mtl.cli import app
from tests.bench_fixtures import interrupt_second_sweep_cell, small_corpus, tiny_args, tiny_model

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
    return tiny_model()


@pytest.fixture
def corpus(tmp_path):
    return small_corpus(tmp_path)


def test_end_to_end_bench_in_worker_processes(model, corpus, tmp_path):
    checkpoint, onnx = model
    out = tmp_path / "bench.json"
    result = invoke(*tiny_args(checkpoint, onnx, corpus), "--precision", "fp32", "--mode", "seed,fused",
                    "--threads", 1, "--json", out, "--markdown", tmp_path / "bench.md")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {r["backend"] for r in report["rows"]} == {"torch-fp32", "ort-fp32"}
    assert len(report["rows"]) == 2 * 2 * 2  # two backends x two modes x (one shape + real text)
    assert all(len(r["latencies_s"]) == (2 if r["workload"] == "synthetic" else 1) for r in report["rows"])
    assert all(r["peak_rss_bytes"] > 0 for r in report["rows"])  # each worker's own
    workers = {w["backend"]: w["modules"] for w in report["workers"]}
    assert workers["ort-fp32"]["torch"] is False and workers["torch-fp32"]["torch"] is True
    assert "| torch-fp32 | seed | 2 | 8 |" in (tmp_path / "bench.md").read_text()
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
    assert cold["backend"] == "ort-int8" and cold["median_s"] > 0 and cold["peak_rss_bytes"] > 0
    assert cold["modules"]["torch"] is False  # the runtime's cold start never imports torch


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
            "mtl.bench.worker, mtl.bench.engines; print('torch' in sys.modules or 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("extra, expected", [
    (["--backend", "tensorrt"], "unknown backend 'tensorrt'; valid: torch, ort"),
    (["--precision", "int4"], "unknown precision 'int4'; valid: fp32, fp32-opt, int8, fp16, bf16"),
    (["--backend", "torch", "--precision", "int8"], "precision 'int8' is not available for torch"),
    (["--backend", "torch-fp16"], "runs on cuda only"),
    (["--mode", "pipelined"], "unknown mode 'pipelined'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--seq-lengths", "8,4096"], "sequence length 4096 is beyond the model's limit of 130 positions"),
    (["--batch-sizes", "0"], "batch size 0 is outside the bench's limits"),
    (["--batch-sizes", "1,x"], "bad --batch-sizes '1,x'"),
    (["--runs", "0"], "--runs must be at least 1"),
])
def test_bad_choices_and_limits_are_one_line(model, corpus, extra, expected):
    checkpoint, onnx = model
    one_error_line(invoke(*tiny_args(checkpoint, onnx, corpus), *extra), expected)


def test_missing_inputs_are_one_line(model, corpus, tmp_path):
    checkpoint, onnx = model
    one_error_line(invoke(*tiny_args(checkpoint, onnx, tmp_path / "nope.jsonl")), "nope.jsonl: file not found")
    one_error_line(invoke("bench", onnx, "--backend", "torch"), "backend torch needs a checkpoint folder")
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


def test_ctrl_c_writes_the_finished_rows(model, corpus, tmp_path, monkeypatch):
    checkpoint, onnx = model
    interrupt_second_sweep_cell(monkeypatch)
    out, markdown = tmp_path / "bench.json", tmp_path / "bench.md"
    result = invoke("bench", onnx, "--backend", "ort-fp32", "--mode", "seed,fused", "--workload", "synthetic",
                    "--batch-sizes", 1, "--seq-lengths", 8, "--warmup", 0, "--runs", 2, "--threads", 1,
                    "--in-process", "--json", out, "--markdown", markdown)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and "interrupted" in result.output
    report = json.loads(out.read_text())
    assert report["interrupted"] is True and [r["mode"] for r in report["rows"]] == ["seed"]
    assert "| ort-fp32 | seed | 1 | 8 |" in markdown.read_text()


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
    assert report["interrupted"] and len(report["rows"]) == 1 and report["cold_start"] == []


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
    assert last.startswith("error: ort-int8:") and "cannot load" in last
    report = json.loads(out.read_text())
    assert [r["backend"] for r in report["rows"]] == ["ort-fp32", "ort-fp32-opt"] and report["failed"]
