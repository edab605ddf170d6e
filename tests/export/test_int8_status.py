"""Checked int8: a checkpoint records its validation files, export checks int8 on them by itself, every int8
variant carries a status, and `auto` runs an int8 that was never checked on labelled data only when told to."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from typer.testing import CliRunner

from mtl.artifacts.checkpoint import DATA_FILE
from mtl.artifacts.manifest import Manifest, load_manifest
from mtl.artifacts.validation import Int8Limits
from mtl.cli import app
from mtl.export.accuracy import int8_problems
from mtl.runtime import Predictor

GENEROUS = ["--max-int8-drop", "100", "--max-int8-f1-drop", "100"]  # a tiny random model: judge status, not loss


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def trained(recorded_checkpoint, tmp_path):
    """(a folder of this test's own holding a copy of the shared recorded checkpoint as model/; its validation
    file)."""
    model, _, valid = recorded_checkpoint
    shutil.copytree(model, tmp_path / "model")
    return tmp_path, valid


@pytest.fixture
def manifest_writes(monkeypatch) -> list[dict]:
    """Every manifest written while the test runs, as it was written."""
    written, write = [], Manifest.write

    def recording_write(manifest, folder):
        written.append(manifest.to_dict())
        write(manifest, folder)

    monkeypatch.setattr(Manifest, "write", recording_write)
    return written


def test_the_checkpoint_records_its_files_and_export_checks_int8_on_them(trained, manifest_writes):
    root, valid = trained
    record = json.loads((root / "model" / DATA_FILE).read_text())
    assert record["tasks"]["topic"]["validation"] == str(valid.resolve())
    result = invoke("export", root / "model", "--output", root / "checked", "--precision", "fp32,int8", *GENEROUS)
    assert result.exit_code == 0, result.output
    int8 = load_manifest(root / "checked").variants["int8"].validation
    assert int8.status == "checked" and int8.data == {"topic": str(valid.resolve())}
    assert int8.real_data["topic"].examples == 12
    assert set(int8.real_data["topic"].drop_points) >= {"accuracy", "macro_f1"}
    assert Predictor.load(root / "checked").precision == "int8"  # auto on CPU runs a checked int8
    # Written once, with the figures on labelled data already in it (the check runs on the manifest in memory).
    assert [m["variants"]["int8"]["validation"]["status"] for m in manifest_writes] == ["checked"]


def test_unchecked_int8_is_never_picked_silently(trained, caplog, manifest_writes):
    root, _ = trained
    result = invoke("export", root / "model", "--output", root / "unchecked", "--precision", "fp32,int8",
                    "--no-recorded-data")
    assert result.exit_code == 0, result.output
    assert [m["variants"]["int8"]["validation"]["status"] for m in manifest_writes] == ["unchecked"]
    assert "int8 was not checked on labelled data" in result.stderr
    assert load_manifest(root / "unchecked").variants["int8"].validation.status == "unchecked"
    with caplog.at_level(logging.WARNING, logger="mtl"):
        assert Predictor.load(root / "unchecked").precision == "fp32"
    assert any("was not checked on labelled data" in r.getMessage() and "--validation-data" in r.getMessage()
               for r in caplog.records)
    assert Predictor.load(root / "unchecked", precision="int8").precision == "int8"  # asked for by name


def test_a_recorded_file_that_is_gone_is_said_and_int8_stays_unchecked(trained, tmp_path):
    root, valid = trained
    model = tmp_path / "model"
    for path in (root / "model").rglob("*"):
        if path.is_file():
            target = model / path.relative_to(root / "model")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    record = json.loads((model / DATA_FILE).read_text())
    record["tasks"]["topic"]["validation"] = str(tmp_path / "moved-away.jsonl")
    (model / DATA_FILE).write_text(json.dumps(record))
    result = invoke("export", model, "--output", tmp_path / "onnx", "--precision", "fp32,int8")
    assert result.exit_code == 0, result.output
    assert "moved-away.jsonl" in result.stderr and "is gone" in result.stderr
    assert load_manifest(tmp_path / "onnx").variants["int8"].validation.status == "unchecked"


def test_the_gate_holds_int8_to_macro_f1_as_well_as_accuracy():
    def figures(accuracy, macro_f1):
        return {"accuracy": accuracy, "macro_f1": macro_f1, "macro_recall": macro_f1}

    # Accuracy within the limit, but a minority class collapsed: macro-F1 falls 12 points.
    report = {"topic": {"examples": 100, "metrics": {"fp32": figures(0.90, 0.80), "int8": figures(0.895, 0.68)},
                        "agreement_with_fp32": {"int8": 0.97}}}
    problems = int8_problems(report, Int8Limits(accuracy=1.0, macro_f1=1.0))
    assert len(problems) == 1 and "macro-F1 68.00 against fp32 80.00 (12.00 points lost; limit 1)" in problems[0]
    assert int8_problems(report, Int8Limits(accuracy=1.0, macro_f1=15.0)) == []
    report["topic"]["metrics"]["int8"] = figures(0.85, 0.80)
    assert "accuracy 85.00 against fp32 90.00" in int8_problems(report, Int8Limits())[0]
