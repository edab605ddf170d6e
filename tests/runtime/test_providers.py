"""Execution providers are loud: what each ONNX Runtime session actually runs on is reported (predict, evaluate,
bench rows), and `--device cuda` without a working CUDA provider is one error line, or with --fallback-cpu a warning
and the CPU, never a silent run on the CPU.

This machine has the CPU onnxruntime, so "no CUDA provider" is tested as it is. onnxruntime#23372's case, a CUDA
provider that ORT lists but whose session falls back to the CPU, is made by listing CUDA as available: the real
session is created with the CUDA provider asked for and reports the CPU, which is what has to decide."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import onnxruntime
import pytest
from typer.testing import CliRunner

from mtl.cli import app
from mtl.errors import DeviceUnavailableError
from mtl.runtime import Predictor
from mtl.runtime.session import CPU_PROVIDER, CUDA_PROVIDER
from tests.factory import TASKS

TEXTS = ["the movie was great", "stocks rally as the market won", "team lost the game"]
runner = CliRunner()


@pytest.fixture
def cuda_listed(monkeypatch):
    """ONNX Runtime lists the CUDA provider as available; its sessions still get only what the build has."""
    real = onnxruntime.get_available_providers
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA_PROVIDER, *real()])


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_cpu_sessions_report_the_cpu_provider(tiny):
    predictor = Predictor.load(tiny.export("bert"), device="cpu", execution="split")
    providers = predictor.providers()
    assert set(providers) == {predictor.files.encoder, *predictor.files.heads.values()}
    assert all(names == [CPU_PROVIDER] for names in providers.values())


def test_cuda_without_a_cuda_provider_is_an_error(tiny):
    with pytest.raises(DeviceUnavailableError) as caught:
        Predictor.load(tiny.export("bert"), device="cuda")
    message = str(caught.value)
    assert "ONNX Runtime has no CUDA execution provider here" in message and "onnxruntime-gpu" in message
    assert "--fallback-cpu" in message and "\n" not in message


def test_a_session_that_did_not_get_cuda_is_an_error(tiny, cuda_listed):
    with pytest.raises(DeviceUnavailableError) as caught:
        Predictor.load(tiny.export("bert"), device="cuda")
    message = str(caught.value)
    # what the session reported decides, and the line says what is missing (no NVIDIA driver on this machine)
    assert "CUDA provider did not start" in message and f"got {CPU_PROVIDER}" in message
    assert "libcuda.so.1" in message and "--fallback-cpu" in message and "\n" not in message


@pytest.mark.parametrize("listed", [False, True], ids=["no-cuda-provider", "cuda-listed-but-not-started"])
def test_fallback_cpu_warns_and_predicts_as_on_cpu(tiny, request, caplog, listed):
    if listed:
        request.getfixturevalue("cuda_listed")
    folder = tiny.export("bert")
    with caplog.at_level(logging.WARNING, logger="mtl"):
        fallen = Predictor.load(folder, device="cuda", fallback_cpu=True)
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("mtl.runtime")]
    assert len(warnings) == 1 and "running on CPU (--fallback-cpu)" in warnings[0]
    on_cpu = Predictor.load(folder, device="cpu")
    assert (fallen.device, fallen.precision) == ("cpu", on_cpu.precision)  # auto: the CPU's variant, not fp16
    assert all(names == [CPU_PROVIDER] for names in fallen.providers().values())
    assert fallen.predict(TEXTS) == on_cpu.predict(TEXTS)


def test_predict_says_what_it_runs_on(tiny):
    folder = tiny.export("bert")
    result = invoke("predict", folder, *TEXTS)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == len(TEXTS)
    manifest = Predictor.load(folder).files
    assert stderr_lines(result) == [f"running on {CPU_PROVIDER}: {manifest.model}"]


def test_predict_cuda_is_one_error_line_or_with_fallback_a_warning(tiny, cuda_listed, caplog):
    folder = tiny.export("bert")
    refused = invoke("predict", folder, *TEXTS, "--device", "cuda")
    assert refused.exit_code == 1 and refused.stdout == ""
    lines = stderr_lines(refused)
    assert len(lines) == 1 and lines[0].startswith("error: CUDA requested, but") and "libcuda.so.1" in lines[0]

    fallen = invoke("predict", folder, *TEXTS, "--device", "cuda", "--fallback-cpu")
    assert fallen.exit_code == 0, fallen.output
    rows = [json.loads(line) for line in fallen.stdout.splitlines()]
    assert [row["text"] for row in rows] == TEXTS and all(set(r["predictions"]) == set(TASKS) for r in rows)
    assert any("running on CPU (--fallback-cpu)" in r.getMessage() for r in caplog.records)  # pytest holds the log
    assert stderr_lines(fallen) == [f"running on {CPU_PROVIDER}: {Predictor.load(folder).files.model}"]


def test_predict_fallback_in_a_process_of_its_own(tiny):
    """The user's view, without pytest's log capture: the warning and the providers line on stderr, N rows out."""
    command = [sys.executable, "-m", "mtl.cli", "predict", str(tiny.export("bert")), *TEXTS, "--device", "cuda",
               "--fallback-cpu", "--precision", "fp32"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(TEXTS)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, result.stderr
    assert "WARNING" in lines[0] and "has no CUDA execution provider" in lines[0]
    assert "running on CPU (--fallback-cpu)" in lines[0]
    assert lines[1] == f"running on {CPU_PROVIDER}: model.onnx"


def test_evaluate_says_what_it_runs_on(tiny, tmp_path):
    data = tmp_path / "topic.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": TASKS["topic"][0]}) + "\n" for t in TEXTS))
    result = invoke("evaluate", tiny.export("bert"), "--task", f"topic={data}")
    assert result.exit_code == 0, result.output
    assert any(line.startswith(f"running on {CPU_PROVIDER}: ") for line in stderr_lines(result))


def test_bench_rows_record_the_provider_their_sessions_ran_on(tiny, tmp_path):
    out = tmp_path / "bench.json"
    result = invoke("bench", "--onnx", tiny.export("bert"), "--backend", "ort-fp32,ort-int8", "--mode", "fused,split",
                    "--workload", "synthetic", "--batch-sizes", "2", "--seq-lengths", "8", "--warmup", "1", "--runs",
                    "2", "--no-cold-start", "--threads", "1", "--json", out, "--in-process")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and {row["provider"] for row in rows} == {CPU_PROVIDER}
    assert f"rows ran on: ort-fp32: {CPU_PROVIDER}; ort-int8: {CPU_PROVIDER}" in result.stdout


def test_bench_on_cuda_that_did_not_start_fails_with_one_line(tiny, tmp_path, cuda_listed):
    out = tmp_path / "bench.json"
    result = invoke("bench", "--onnx", tiny.export("bert"), "--backend", "ort-fp32", "--device", "cuda",
                    "--workload", "synthetic", "--batch-sizes", "2", "--seq-lengths", "8", "--warmup", "1", "--runs",
                    "2", "--no-cold-start", "--json", out, "--in-process")
    assert result.exit_code == 1, result.output
    errors = [line for line in stderr_lines(result) if line.startswith("error:")]
    assert len(errors) == 1 and "CUDA provider did not start" in errors[0], result.stderr
    assert json.loads(out.read_text())["rows"] == []  # nothing measured on the CPU under a CUDA label


def test_the_image_build_check_fails_without_a_cuda_provider():
    """`python -m mtl.runtime.cuda`, the gpu image's build check, on this CPU onnxruntime: exit 1, one line."""
    result = subprocess.run([sys.executable, "-m", "mtl.runtime.cuda"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: onnxruntime {onnxruntime.__version__} has no CUDA provider here "
        f"({onnxruntime.__file__.rsplit('/', 1)[0]}/capi/libonnxruntime_providers_cuda.so)"]
