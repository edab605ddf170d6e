"""`mtl-onnx quickstart` says in one line where it runs, before it trains: on this machine (no GPU) the CPU."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

import mtl.cli.quickstart as quickstart_cli
from mtl.cli import app
from mtl.errors import BackboneNotFoundError

CPU_LINE = "running on CPU: PyTorch sees no CUDA GPU here (with Docker, pass --gpus all to use one)"


def test_without_a_gpu_it_says_it_runs_on_cpu(tmp_path, monkeypatch):
    assert not torch.cuda.is_available()  # what this test is about; a GPU machine says otherwise

    def stop_before_training(*args, **kwargs):  # the line comes first; training the real MiniLM is test_minilm's
        raise BackboneNotFoundError("stopped here by the test")

    monkeypatch.setattr(quickstart_cli, "run_training", stop_before_training)
    result = CliRunner().invoke(app, ["quickstart", "--output", str(tmp_path / "quickstart")])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0] == CPU_LINE and lines[-1] == "error: stopped here by the test"
    assert sum(CPU_LINE in line for line in lines) == 1
