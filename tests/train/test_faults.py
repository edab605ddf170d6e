"""Faults during long work: a run whose loss goes NaN stops with one line and saves nothing; a training run or an
export killed with SIGKILL half-way leaves the old output as it was, and the next run (resumed or not) completes
and clears what the killed one left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.artifacts.checkpoint import check_checkpoint, is_checkpoint
from mtl.artifacts.manifest import load_manifest
from mtl.cli import app
from tests.factory import demo_rows, write_jsonl


def cli_process(*args) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "mtl.cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL the process as soon as `ready()` holds (it must not have finished first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the process never reached the point to kill it at"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture
def topic(tmp_path) -> Path:
    return write_jsonl(tmp_path / "topic.jsonl", demo_rows("ag_news", "train", 32))


def test_a_diverging_run_stops_with_one_line_and_saves_nothing(tiny, topic, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken-backbone"
    broken.mkdir()
    for path in tiny.backbone("bert").iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    weights = load_file(str(broken / "model.safetensors"))
    name = next(n for n in weights if "word_embeddings" in n)
    weights[name] = weights[name] * float("inf")
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    result = CliRunner().invoke(app, ["train", "--task", f"topic={topic}", "--backbone", str(broken),
                                      "--output", str(tmp_path / "out"), "--max-steps", "3"])
    assert result.exit_code == 1, result.output
    assert "the training loss became nan at step 1: the run diverged" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


@pytest.mark.slow
def test_a_killed_training_run_resumes_or_restarts(tiny, topic, tmp_path):
    output = tmp_path / "model"
    train = ["train", "--task", f"topic={topic}", "--backbone", tiny.backbone("bert"), "--output", output,
             "--batch-size", "4", "--grad-accumulation", "1", "--epochs", "40"]
    partial = tmp_path / ".model.partial"
    kill_when(cli_process(*train), lambda: any((partial / "checkpoints").glob("checkpoint-*/trainer_state.json")))
    assert not output.exists()  # nothing published by the killed run

    shorter = [a if a != "40" else "2" for a in train]
    resumed = cli_process(*shorter, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    check_checkpoint(output)
    assert not partial.exists()

    # Killed again, this time over a finished model: the model stays as it was; a plain rerun replaces the
    # killed run's folder (its process is gone) and publishes.
    before = (output / "model.safetensors").read_bytes()
    kill_when(cli_process(*train, "--overwrite"),
              lambda: any((partial / "checkpoints").glob("checkpoint-*/trainer_state.json")))
    assert (output / "model.safetensors").read_bytes() == before and is_checkpoint(output)
    rerun = cli_process(*shorter, "--overwrite")
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()
    assert not partial.exists() and is_checkpoint(output)
    assert json.loads((output / "train_config.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_a_killed_export_leaves_the_old_export_and_the_rerun_clears_its_staging(tiny, tmp_path):
    output = tiny.copy_export("bert")
    before = (output / "manifest.json").read_bytes()
    staging = lambda: [p for p in output.parent.glob(f".{output.name}.*.staging") if any(p.glob("*.onnx"))]  # noqa: E731
    kill_when(cli_process("export", tiny.checkpoint("bert"), "--output", output, "--overwrite",
                          "--precision", "fp32,int8", "--threads", "1"), lambda: bool(staging()))
    assert (output / "manifest.json").read_bytes() == before
    load_manifest(output)
    assert staging()  # the killed run's folder is still there ...
    rerun = cli_process("export", tiny.checkpoint("bert"), "--output", output, "--overwrite", "--threads", "1")
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()
    assert not list(output.parent.glob(f".{output.name}.*"))  # ... until the next run to the same output
    assert list(load_manifest(output).variants) == ["fp32"]
