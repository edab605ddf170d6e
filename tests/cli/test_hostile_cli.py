"""Hostile input and faults through the CLI, as a user would hit them: every case ends in one clear line and a
non-zero exit code (1 for what the user gave, 2 for an option value its type refuses), never a traceback, with
nothing written and no folder of the user's touched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.cli import app
from tests.factory import demo_rows, write_jsonl


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under a folder with its content hash: equal before and after means untouched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_fails_cleanly(result, fragment: str, code: int = 1) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output and not isinstance(result.exception, (TypeError, AttributeError))
    if code == 1:
        lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, result.stderr
        assert fragment in lines[0], lines[0]
    else:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile-data")
    files = {
        "topic": write_jsonl(root / "topic.jsonl", demo_rows("ag_news", "train", 24)),
        "topic_valid": write_jsonl(root / "topic_valid.jsonl", demo_rows("ag_news", "validation", 8)),
        "surrogate": root / "surrogate.jsonl",
        "unknown_label": write_jsonl(root / "unknown_label.jsonl", [{"text": "a", "label": "Astrology"}]),
        "texts": root / "texts.txt",
        # "Café" in NFC and in NFD, and a label of a zero-width space: classes a person cannot tell apart
        "lookalike": write_jsonl(root / "lookalike.jsonl", [{"text": "a", "label": "Caf\u00e9"},
                                                            {"text": "b", "label": "Cafe\u0301"}]),
        "invisible_label": write_jsonl(root / "invisible_label.jsonl", [{"text": "a", "label": "World"},
                                                                        {"text": "b", "label": "\u200b"}]),
    }
    rows = demo_rows("ag_news", "train", 6)
    files["surrogate"].write_text("".join(json.dumps(r) + "\n" for r in rows[:4]) + '{"text": "x\\ud800", '
                                  '"label": "World"}\n', encoding="utf-8")
    files["texts"].write_text("Stocks rallied.\nThe team won.\n", encoding="utf-8")
    return files


# --- train: every option checked before the backbone loads ---------------------------------------------------

TRAIN_OPTIONS = [
    (["--encoder-lr", "nan"], "encoder_lr must be a number in [0, 1], got nan", 1),
    (["--encoder-lr", "inf"], "encoder_lr must be a number in [0, 1], got inf", 1),
    (["--encoder-lr", "3"], "encoder_lr must be in [0, 1], got 3.0", 1),
    (["--head-lr-multiplier", "-1"], "head_lr_multiplier must be in [0, 10000]", 1),
    (["--weight-decay", "nan"], "weight_decay must be a number", 1),
    (["--warmup-ratio", "1.5"], "warmup_ratio must be in [0, 1]", 1),
    (["--max-grad-norm", "-inf"], "max_grad_norm must be a number", 1),
    (["--layer-lr-decay", "0"], "layer_lr_decay must be in (0, 1]", 1),
    (["--temperature", "0", "--sampling", "temperature"], "temperature must be in (0, 1000]", 1),
    (["--epochs", "nan"], "--epochs", 2),
    (["--max-steps", "0"], "max_steps must be -1 (train by epochs) or at least 1", 1),
    (["--seed", "-5"], "seed must be in [0, 4.29497e+09]", 1),
    (["--warmup-steps", "-1"], "warmup_steps must be in [0, 1e+09]", 1),
    (["--batch-size", "0"], "--batch-size", 2),
    (["--grad-accumulation", "0"], "--grad-accumulation", 2),
    (["--max-length", "1"], "--max-length", 2),
    (["--pooling", "max"], "'cls', 'mean'", 2),
    (["--sampling", "random"], "'uniform', 'proportional', 'temperature'", 2),
    (["--precision", "fp8"], "'auto', 'fp32', 'bf16'", 2),
    (["--length-window", "0"], "length_window must be in [1, 1e+06], got 0", 1),
    (["--unfreeze-top-layers", "2", "--unfreeze-from-layer", "1"], "not both", 1),
    (["--freeze-head", "nope"], "cannot freeze unknown head(s) nope", 1),
]


@pytest.mark.parametrize("args, fragment, code", TRAIN_OPTIONS, ids=[" ".join(c[0]) for c in TRAIN_OPTIONS])
def test_bad_training_options(tiny, data, tmp_path, args, fragment, code):
    output = tmp_path / "out"
    result = invoke("train", "--task", f"topic={data['topic']}", "--backbone", tiny.backbone("bert"),
                    "--output", output, *args)
    assert_fails_cleanly(result, fragment, code)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("task, fragment", [
    ("topic", "bad --task 'topic': expected NAME=TRAIN_FILE[,VALIDATION_FILE]"),
    ("topic=a,b,c", "expected NAME=TRAIN_FILE"),
    ("topic=/no/such.jsonl", "/no/such.jsonl: file not found"),
    ("t/x={topic}", "invalid task name 't/x'"),
    ("topic={surrogate}", ":5: field 'text': holds a lone surrogate (U+D800)"),
    ("topic={topic},{unknown_label}", "label 'Astrology' is not one of the training labels"),
    ("topic={lookalike}", "lookalike.jsonl:2: labels 'Caf\\xe9' and 'Cafe\\u0301' look the same"),
    ("topic={invisible_label}", "invisible_label.jsonl:2: label '\\u200b': is empty or invisible"),
])
def test_bad_training_data(tiny, data, tmp_path, task, fragment):
    result = invoke("train", "--task", task.format(**data), "--backbone", tiny.backbone("bert"),
                    "--output", tmp_path / "out")
    assert_fails_cleanly(result, fragment)
    assert not (tmp_path / "out").exists()


def test_duplicate_task_names(tiny, data, tmp_path):
    result = invoke("train", "--task", f"topic={data['topic']}", "--task", f"topic={data['topic']}",
                    "--backbone", tiny.backbone("bert"), "--output", tmp_path / "out")
    assert_fails_cleanly(result, "duplicate task names: topic")


def test_a_hugging_face_model_folder_is_never_replaced(tiny, data, tmp_path):
    hf_model = tmp_path / "my-model"
    shutil.copytree(tiny.backbone("bert"), hf_model)
    before = fingerprint(hf_model)
    result = invoke("train", "--task", f"topic={data['topic']}", "--backbone", tiny.backbone("bert"),
                    "--output", hf_model, "--overwrite")
    assert_fails_cleanly(result, "holds no mtl-onnx model")
    assert fingerprint(hf_model) == before


def test_overwrite_with_a_backbone_that_fails_keeps_the_old_model(tiny, data, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny.checkpoint("bert"), model)
    (model / "checkpoints" / "checkpoint-7").mkdir(parents=True)
    (model / "checkpoints" / "checkpoint-7" / "state.json").write_text("{}")
    before = fingerprint(model)
    result = invoke("train", "--task", f"topic={data['topic']}", "--backbone", tmp_path / "no-such-backbone",
                    "--output", model, "--overwrite")
    assert_fails_cleanly(result, "could not be loaded")
    assert fingerprint(model) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("make_output, fragment", [
    (lambda root: (root / "afile").write_text("x") and root / "afile", "exists and is not a folder"),
    (lambda root: (root / "afile").write_text("x") and root / "afile" / "out", "afile is a file, not a folder"),
    (lambda root: (root / "link").symlink_to(root / "gone") or root / "link", "which does not exist"),
])
def test_unwritable_training_outputs(tiny, data, tmp_path, make_output, fragment):
    output = make_output(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("train", "--task", f"topic={data['topic']}", "--backbone", tiny.backbone("bert"),
                    "--output", output)
    assert_fails_cleanly(result, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_resume_without_a_run(tiny, data, tmp_path):
    result = invoke("train", "--task", f"topic={data['topic']}", "--backbone", tiny.backbone("bert"),
                    "--output", tmp_path / "out", "--resume")
    assert_fails_cleanly(result, "nothing to resume")


# --- predict ---------------------------------------------------------------------------------------------------

PREDICT_OPTIONS = [
    (["x", "--batch-size", "-1"], "greater than or equal to 1", 2),
    (["x", "--threads", "0"], "greater than or equal to 1", 2),
    (["x", "--execution", "both"], "'fused', 'split'", 2),
    (["--file", "/no/such/file.jsonl"], "/no/such/file.jsonl: file not found", 1),
    (["--file", "{folder}"], "not a file", 1),
    ([], "no input: give texts as arguments or --file", 1),
    (["x", "-t", "nope"], "unknown task 'nope'; valid: topic, sentiment", 1),
    (["x", "--file", "{texts}", "--file", "/no/such.txt"], "/no/such.txt: file not found", 1),
]


@pytest.mark.parametrize("args, fragment, code", PREDICT_OPTIONS, ids=[" ".join(c[0]) for c in PREDICT_OPTIONS])
def test_bad_predict_input(tiny, data, tmp_path, args, fragment, code):
    args = [a.format(folder=tmp_path, texts=data["texts"]) for a in args]
    result = invoke("predict", tiny.export("bert"), *args)
    assert_fails_cleanly(result, fragment, code)
    assert result.stdout == ""  # a bad option or file is found before any row is written


def test_repeated_files_are_all_read_in_order(tiny, data, tmp_path):
    second = tmp_path / "second.jsonl"
    second.write_text('{"text": "NASA launched a probe."}\n{"text": ""}\n', encoding="utf-8")
    result = invoke("predict", tiny.export("bert"), "first argument", "--file", data["texts"], "--file", second)
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["first argument", "Stocks rallied.", "The team won.",
                                        "NASA launched a probe.", ""]
    assert rows[-1]["error"] == f"{second}:2: field 'text': empty text"


def test_predict_with_a_negative_batch_size_through_the_api_is_refused(tiny):
    from mtl.errors import ConfigError
    from mtl.model import TorchPredictor

    predictor = TorchPredictor.load(tiny.checkpoint("bert"))
    with pytest.raises(ConfigError, match="batch size must be a whole number of at least 1, got -1"):
        predictor.predict(["a"], batch_size=-1)


@pytest.mark.parametrize("damage, fragment", [
    (lambda f: (f / "manifest.json").write_text("{not json"), "manifest.json: not valid JSON"),
    (lambda f: _edit_manifest(f, lambda m: m["model"]["tasks"][0]["labels"].pop()), "labels, but its graph outputs"),
    (lambda f: _edit_manifest(f, lambda m: m["model"]["tasks"][0]["labels"].__setitem__(0, "")), "non-empty string"),
    (lambda f: _edit_manifest(f, lambda m: m["model"].__setitem__("max_length", 100000)), "more than the encoder's"),
    (lambda f: _edit_manifest(f, lambda m: m["model"].__setitem__("max_length", "long")), "malformed manifest"),
    (lambda f: _edit_manifest(f, lambda m: m["model"].__setitem__("input_names", ["input_ids", "pixels"])),
     "unknown encoder input 'pixels'"),
    (lambda f: _edit_manifest(f, lambda m: m.__setitem__("tokenizer", "/etc/passwd")), "outside the export folder"),
    (lambda f: _edit_manifest(f, lambda m: m.__setitem__("tokenizer", "../x.json")), "outside the export folder"),
])
def test_damaged_export_folders(tiny, damage, fragment):
    folder = tiny.copy_export("bert")
    damage(folder)
    assert_fails_cleanly(invoke("predict", folder, "some text"), fragment)


def _edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_an_export_folder_of_symlinks_loads_like_a_hugging_face_snapshot(tiny, tmp_path):
    """The hub cache keeps files in blobs/ and links each snapshot's names to them."""
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc123"
    for path in tiny.export("bert").rglob("*"):
        if path.is_file():
            blob = blobs / hashlib.sha256(path.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(tiny.export("bert"))
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    result = invoke("predict", snapshot, "Stocks rallied.")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["predictions"]["topic"]["label"]


def test_a_checkpoint_with_nan_weights_is_refused_not_printed_as_nan(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan-model"
    shutil.copytree(tiny.checkpoint("bert"), folder)
    weights = load_file(str(folder / "model.safetensors"))
    name = next(n for n in weights if n.startswith("heads."))
    weights[name] = weights[name] * float("nan")
    save_file(weights, str(folder / "model.safetensors"))
    result = invoke("predict", folder, "Stocks rallied.")
    assert_fails_cleanly(result, "hold NaN or infinite values")
    assert "NaN" not in result.stdout


# --- evaluate and export ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--task", "topic"], "bad --task 'topic': expected NAME=FILE"),
    (["--task", "topic={topic_valid}", "--task", "topic={topic_valid}"], "--task names 'topic' twice"),
    (["--task", "topic={unknown_label}"], "label 'Astrology' is not one of the training labels"),
    (["--task", "topic={surrogate}"], "holds a lone surrogate"),
    (["--task", "topic={topic_valid}", "--json", "{folder}"], "is a folder, not a file"),
])
def test_bad_evaluate_input(tiny, data, tmp_path, args, fragment):
    args = [a.format(folder=tmp_path, **data) for a in args]
    assert_fails_cleanly(invoke("evaluate", tiny.export("bert"), *args), fragment)


@pytest.mark.parametrize("args, fragment, code", [
    (["--max-int8-drop", "nan"], "max_int8_drop must be a number", 1),
    (["--max-int8-drop", "-1"], "max_int8_drop must be in [0, 100]", 1),
    (["--opset", "99"], "--opset", 2),
    (["--threads", "0"], "--threads", 2),
    (["--precision", "fp32,int4"], "Invalid value for '--precision': unknown precision 'int4'; valid: fp32, int8, fp16",
     2),
    (["--validation-data", "topic={surrogate}"], "holds a lone surrogate", 1),
    (["--validation-data", "nope={topic_valid}"], "unknown task 'nope'", 1),
])
def test_bad_export_options_write_nothing(tiny, data, tmp_path, args, fragment, code):
    args = [a.format(**data) for a in args]
    result = invoke("export", tiny.checkpoint("bert"), "--output", tmp_path / "out", *args)
    assert_fails_cleanly(result, fragment, code)
    assert list(tmp_path.iterdir()) == []


def test_export_never_replaces_a_foreign_folder(tiny, tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    result = invoke("export", tiny.checkpoint("bert"), "--output", foreign, "--overwrite")
    assert_fails_cleanly(result, "holds no mtl-onnx export")
    assert fingerprint(foreign) == {"cat.jpg": hashlib.sha256(b"\xff\xd8").hexdigest()}


def test_quickstart_never_writes_into_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("quickstart", "--output", tmp_path, "--max-steps", "1")
    assert_fails_cleanly(result, "holds no mtl-onnx quickstart folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("command, what", [("predict", "the predictions"), ("evaluate", "the metrics table"),
                                           ("bench", "the bench's tables")])
def test_a_closed_stdout_is_one_line_before_the_model_loads(tmp_path, command, what):
    """`>&-`: Python then has no sys.stdout; predict used to end in a traceback, evaluate and bench in exit 0 with
    their results lost. Each refuses before any work (the model folder given does not even exist)."""
    data = tmp_path / "topic.jsonl"
    data.write_text('{"text": "a", "label": "World"}\n')
    args = {"predict": ["hello"], "evaluate": ["-t", f"topic={data}"], "bench": []}[command]
    result = subprocess.run([sys.executable, "-m", "mtl.cli", command, str(tmp_path / "no-model"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                            preexec_fn=lambda: os.close(1))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: standard output is closed, so {what} would be lost; send "
                                                  f"it to a file or /dev/null instead of closing it"]
