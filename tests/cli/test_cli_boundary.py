"""The CLI's boundary, as a user meets it in a fresh process: `--version`; a missing folder or file refused before
torch or transformers is imported; a runtime-only install (no torch, transformers, ray, matplotlib, tritonclient)
naming the extra each command needs; every `train` option with help text under a heading. (Tables printed whole in a
file or a pipe: tests/bench/test_command.py, whose sweep table is the widest.)

A runtime-only install is simulated, not made: the command runs in a subprocess whose import system refuses the
extras' modules (`ModuleNotFoundError`, as if they were never installed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import mtl
from mtl.cli import app
from tests.factory import demo_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers")
TRAIN_EXTRA = "pip install 'mtl-onnx[train]'"

# Runs `mtl-onnx ARGS...` with the modules named in $MTL_TEST_BLOCK refused by the import system, and at exit writes
# which heavy modules the process had imported to $MTL_TEST_IMPORTED.
RUNNER = """
import atexit, json, os, runpy, sys

blocked = set(filter(None, os.environ["MTL_TEST_BLOCK"].split(",")))

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())

def record():
    with open(os.environ["MTL_TEST_IMPORTED"], "w") as out:
        json.dump(sorted(m for m in ("torch", "transformers") if m in sys.modules), out)

atexit.register(record)
sys.argv[0] = "mtl-onnx"
runpy.run_module("mtl.cli", run_name="__main__", alter_sys=True)
"""


def run_cli(tmp_path: Path, *args, block: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, list[str]]:
    """(the finished process, the heavy modules it imported)."""
    imported = tmp_path / "imported.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MTL_TEST_BLOCK": ",".join(block),
           "MTL_TEST_IMPORTED": str(imported)}
    done = subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    return done, json.loads(imported.read_text())


def assert_one_error_line(done: subprocess.CompletedProcess, fragment: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert fragment in lines[0], lines[0]


def fake_checkpoint(folder: Path) -> Path:
    """A folder with every file a checkpoint must have, enough for the checks before loading (nothing loads it)."""
    for name in ("config.json", "encoder/config.json", "model.safetensors", "tokenizer_config.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    return folder


@pytest.fixture
def labelled(tmp_path) -> Path:
    return write_jsonl(tmp_path / "topic.jsonl", demo_rows("ag_news", "validation", 8))


# --- --version ----------------------------------------------------------------------------------------------------

def test_version_prints_the_installed_version_without_importing_torch(tmp_path):
    done, imported = run_cli(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    try:
        expected = metadata.version("mtl-onnx")
    except metadata.PackageNotFoundError:
        expected = mtl.__version__
    assert done.stdout == f"mtl-onnx {expected}\n" and imported == []


def test_the_package_and_its_metadata_declare_one_version():
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert mtl.__version__ == declared


# --- a missing folder or file: one line, before torch ---------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["export", "/no/such", "--output", "out"], "/no/such: no such checkpoint folder"),
    (["export", "{checkpoint}", "--output", "out", "--validation-data", "topic=/no/such.jsonl"],
     "/no/such.jsonl: file not found"),
    (["predict", "/no/such", "a text"], "/no/such: no such folder; give a checkpoint"),
    (["predict", "{tmp}", "a text"], "not a complete mtl-onnx checkpoint (missing config.json"),
    (["predict", "{checkpoint}", "--file", "/no/such.txt"], "/no/such.txt: file not found"),
    (["evaluate", "/no/such", "--task", "topic={labelled}"], "/no/such: no such folder"),
    (["evaluate", "{checkpoint}", "--task", "topic=/no/such.jsonl"], "/no/such.jsonl: file not found"),
    (["evaluate", "{checkpoint}", "--task", "topic={tmp}"], "is a folder, not a file"),
    (["bench", "/no/such"], "/no/such: no such folder"),
    (["train", "--task", "topic=/no/such.jsonl", "--output", "out"], "/no/such.jsonl: file not found"),
    (["train", "--task", "topic={labelled},/no/valid.jsonl", "--output", "out"], "/no/valid.jsonl: file not found"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_a_missing_folder_or_file_is_refused_before_torch_is_imported(tmp_path, labelled, args, fragment):
    checkpoint = fake_checkpoint(tmp_path / "checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(checkpoint=checkpoint, labelled=labelled, tmp=empty) for a in args]
    done, imported = run_cli(tmp_path, *args)
    assert_one_error_line(done, fragment)
    assert imported == []


# --- a runtime-only install names the extra -------------------------------------------------------------------------

RUNTIME_ONLY = ("torch", "transformers", "accelerate", "safetensors", "onnx", "onnxscript", "ray", "pyarrow",
                "matplotlib", "tritonclient")


@pytest.mark.parametrize("args, fragment", [
    (["train", "--task", "topic={labelled}", "--output", "out"],
     f"train needs the train extra (torch is not installed): {TRAIN_EXTRA}"),
    (["quickstart", "--output", "qs"], f"quickstart needs the train extra (torch is not installed): {TRAIN_EXTRA}"),
    (["export", "{checkpoint}", "--output", "out"],
     f"export needs the train extra (torch is not installed): {TRAIN_EXTRA}"),
    (["export", "{checkpoint}", "--output", "out", "--triton", "models"],
     "needs tritonclient[grpc]; install it with: pip install 'mtl-onnx[triton]'"),
    (["predict", "{checkpoint}", "a text"],
     f"predict on a PyTorch checkpoint (an export folder needs no extra) needs the train extra (torch is not "
     f"installed): {TRAIN_EXTRA}"),
    (["evaluate", "{checkpoint}", "--task", "topic={labelled}"], "evaluate on a PyTorch checkpoint"),
    (["predict", "{export}", "--file", "{labelled}", "--engine", "ray", "--output", "shards"],
     "predict --engine ray needs the ray extra (ray is not installed): pip install 'mtl-onnx[ray]'"),
], ids=lambda value: " ".join(value[:2]) if isinstance(value, list) else None)
def test_a_runtime_only_install_names_the_extra_a_command_needs(tmp_path, labelled, args, fragment):
    export = tmp_path / "export"
    export.mkdir()
    (export / "manifest.json").write_text("{}")  # an export folder by its look; the ray check comes first
    args = [a.format(checkpoint=fake_checkpoint(tmp_path / "checkpoint"), labelled=labelled, export=export)
            for a in args]
    done, imported = run_cli(tmp_path, *args, block=RUNTIME_ONLY)
    assert_one_error_line(done, fragment)
    assert "Traceback" not in done.stderr and imported == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "export", "imported.json", "topic.jsonl"]


def test_bench_plot_names_the_bench_extra(tmp_path, tiny):
    done, imported = run_cli(tmp_path, "bench", tiny.export("bert"), "--workload", "synthetic", "--seq-lengths", 8,
                             "--plot", tmp_path / "bench.png", block=RUNTIME_ONLY)
    assert_one_error_line(done, "--plot needs matplotlib, which is not installed: pip install 'mtl-onnx[bench]'")
    assert imported == []


def test_an_export_folder_runs_on_a_runtime_only_install(tmp_path, tiny):
    done, imported = run_cli(tmp_path, "predict", tiny.export("bert"), "Stocks rallied after the rate cut.",
                             block=RUNTIME_ONLY)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["predictions"]) == {"topic", "sentiment"} and imported == []


# --- train --help -------------------------------------------------------------------------------------------------

def test_every_train_option_has_help_and_a_heading():
    command = typer.main.get_command(app).commands["train"]
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    assert len(options) > 30
    assert [p.name for p in options if not (p.help or "").strip()] == []
    assert [p.name for p in options if not getattr(p, "rich_help_panel", None)] == []
    shown = CliRunner().invoke(app, ["train", "--help"], terminal_width=120).output
    headings = [line[:-1] for line in shown.splitlines() if re.fullmatch(r"[A-Z][A-Za-z ]+:", line)]
    assert headings == ["Data", "Model", "Optimisation", "Freezing", "Sampling and batching", "Loss", "Output",
                        "Options"]


def test_bench_help_shows_the_valid_values_of_its_choices():
    shown = CliRunner().invoke(app, ["bench", "--help"], terminal_width=200).output
    for metavar in ("--mode <per-task|fused|split>[,...]", "--device <cpu|cuda>",
                    "--precision <fp32|fp32-opt|int8|int8-plain|fp16|bf16>[,...]", "--workload <synthetic|text>[,...]"):
        assert metavar in shown
