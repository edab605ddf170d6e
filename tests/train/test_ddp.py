"""Training under torchrun: 2 CPU processes (gloo), across a progressive-unfreezing phase change, through the
CLI; the checkpoint then exports and predicts."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from mtl.cli import app
from mtl.model import MultitaskModel
from tests.factory import LAYERS, make_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_with_unfreezing(tiny_bert, small_task_files, tmp_path):
    # No validation files: the saved model is the last step's, not the best epoch's.
    (topic, _), (sentiment, _) = small_task_files["topic"], small_task_files["sentiment"]
    output = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
        "-m", "mtl.cli", "train", "--task", f"topic={topic}", "--task", f"sentiment={sentiment}",
        "--backbone", str(tiny_bert), "--output", str(output), "--epochs", "2", "--batch-size", "4",
        "--grad-accumulation", "1", "--encoder-lr", "1e-3", "--progressive-unfreezing", "--unfreeze-top-layers", "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unfreezing phase 1" in done.stderr
    assert done.stderr.count("model saved") == 1  # the main process reports; the other one stays quiet
    assert "trained on 192 sampled examples" in done.stderr  # 2 epochs x 96 examples, shared by 2 processes

    trained = MultitaskModel.from_pretrained(output).state_dict()
    initial, _ = make_model(tiny_bert)
    initial = initial.state_dict()
    moved = {n for n in trained if n.startswith("encoder.") and not torch.equal(trained[n], initial[n])}
    # phase 0 trained heads only, phase 1 opened the top layer (1, of layers 0 and 1); nothing below it may move
    assert moved and all(f".layer.{LAYERS - 1}." in n for n in moved), sorted(moved)[:5]
    assert any(not torch.equal(trained[n], initial[n]) for n in trained if n.startswith("heads."))

    # what DDP trained exports, validates and predicts like any checkpoint
    runner = CliRunner()
    exported = runner.invoke(app, ["export", str(output), "--output", str(tmp_path / "onnx"), "--threads", "1"])
    assert exported.exit_code == 0, exported.output
    predicted = runner.invoke(app, ["predict", str(tmp_path / "onnx"), "stocks fell", "a great game"])
    assert predicted.exit_code == 0, predicted.output
    assert [set(json.loads(line)["predictions"]) for line in predicted.stdout.splitlines()] == [
        {"topic", "sentiment"}] * 2
