"""A checkpoint's data.json may come from anyone and name any file on this machine. Export uses a recorded
validation file only while it is a regular file of the size and sha256 recorded at training; any other is left
out with one note naming it (int8 then stays unchecked on it) and nothing of its content is ever shown."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.artifacts.checkpoint import DATA_FILE, recorded_validation_files
from mtl.artifacts.manifest import load_manifest
from mtl.cli import app
from tests.factory import demo_rows, write_jsonl

MARKER = "SECRET-MARKER-7f3a9c"  # in the "secret" file: must never reach the terminal
GENEROUS = ["--max-int8-drop", "100", "--max-int8-f1-drop", "100"]  # a tiny random model: judge status, not loss


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def squeezed(text: str) -> str:
    """`text` without whitespace: rich wraps the terminal's lines anywhere, even inside a path or a word."""
    return "".join(text.split())


def fingerprint(path: Path) -> dict:
    data = path.read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.fixture
def trained(recorded_checkpoint):
    return recorded_checkpoint


def copied(checkpoint: Path, where: Path, edit=None) -> Path:
    """A copy of the checkpoint, its data record changed by `edit(record)`."""
    model = where / "model"
    shutil.copytree(checkpoint, model)
    if edit is not None:
        record = json.loads((model / DATA_FILE).read_text())
        edit(record)
        (model / DATA_FILE).write_text(json.dumps(record))
    return model


def secret_file(where: Path) -> Path:
    path = where / "secret.jsonl"
    path.write_text(f"{MARKER} password=hunter2\nsecond line {MARKER}\n")
    return path


def test_training_records_each_files_size_and_sha256(trained):
    model, train, valid = trained
    record = json.loads((model / DATA_FILE).read_text())
    assert record["fingerprints"] == {str(train.resolve()): fingerprint(train),
                                      str(valid.resolve()): fingerprint(valid)}
    files, _, _, notes = recorded_validation_files(model)
    assert files == {"topic": valid.resolve()} and notes == []


def naming(path: Path, with_fingerprint: dict | None):
    def edit(record):
        record["tasks"]["topic"]["validation"] = str(path)
        if with_fingerprint is not None:
            record["fingerprints"][str(path)] = with_fingerprint
    return edit


def test_a_record_naming_another_file_never_shows_it_and_leaves_int8_unchecked(trained, tmp_path):
    secret = secret_file(tmp_path)
    cases = {  # the record's claim -> what the note says
        "no-fingerprint": (secret, None, "has no fingerprint"),
        "wrong-fingerprint": (secret, {"size": secret.stat().st_size, "sha256": "0" * 64}, "has changed since"),
        "passwd": (Path("/etc/passwd"), None, "has no fingerprint"),
        # Whoever knows a file's content can write its true fingerprint: it is then read, and refused as data,
        # but its content is still not quoted, since the user never named it.
        "true-fingerprint": (secret, fingerprint(secret), "cannot be read as labelled data"),
    }
    for name, (path, claimed, said) in cases.items():
        model = copied(trained[0], tmp_path / name, naming(path, claimed))
        result = invoke("export", model, "--output", tmp_path / name / "onnx", "--precision", "fp32,int8",
                        "--threads", "1", *GENEROUS)
        assert result.exit_code == 0, result.output
        shown = squeezed(result.output)
        assert MARKER not in shown and "hunter2" not in shown and "root:" not in shown
        notes = squeezed(result.stderr).split("note:")
        named = [note for note in notes if "thatthecheckpointrecords" in note]
        assert len(named) == 1 and squeezed(said) in named[0] and squeezed(str(path)) in named[0], (name, notes)
        assert "--validation-datatopic=FILE" in named[0]
        int8 = load_manifest(tmp_path / name / "onnx").variants["int8"].validation
        assert int8.status == "unchecked" and not int8.real_data, name


def test_a_recorded_file_edited_after_training_is_skipped_with_a_note(trained, tmp_path):
    model, _, valid = trained
    edited = write_jsonl(tmp_path / "valid.jsonl", demo_rows("ag_news", "validation", 12))
    model = copied(model, tmp_path, naming(edited, fingerprint(valid)))  # the fingerprint of the trained-on file
    assert fingerprint(edited) == fingerprint(valid)  # the same content: used
    assert recorded_validation_files(model)[0] == {"topic": edited}
    with edited.open("a") as handle:  # one more example, after training
        handle.write(json.dumps({"text": "added later", "label": "World"}) + "\n")
    result = invoke("export", model, "--output", tmp_path / "onnx", "--precision", "fp32,int8", *GENEROUS)
    assert result.exit_code == 0, result.output
    assert squeezed("has changed since training") in squeezed(result.stderr)
    assert squeezed("int8 is not checked on it") in squeezed(result.stderr)
    assert load_manifest(tmp_path / "onnx").variants["int8"].validation.status == "unchecked"


def test_an_untouched_recorded_file_checks_int8(trained, tmp_path):
    result = invoke("export", trained[0], "--output", tmp_path / "onnx", "--precision", "fp32,int8", *GENEROUS)
    assert result.exit_code == 0, result.output
    assert squeezed("that the checkpoint records") not in squeezed(result.stderr)
    int8 = load_manifest(tmp_path / "onnx").variants["int8"].validation
    assert int8.status == "checked" and int8.real_data["topic"].examples == 12


def test_files_that_are_not_regular_are_never_read(trained, tmp_path):
    fifo = tmp_path / "valid.fifo"
    os.mkfifo(fifo)  # no writer: reading it would wait forever
    for path in (fifo, Path("/dev/zero")):  # /dev/zero: reading it would never end
        model = copied(trained[0], tmp_path / f"copy-{path.name}", naming(path, {"size": 10, "sha256": "0" * 64}))
        found = []
        reader = threading.Thread(target=lambda: found.append(recorded_validation_files(model)), daemon=True)
        reader.start()
        reader.join(60)
        assert not reader.is_alive(), f"{path} was read"
        files, _, _, notes = found[0]
        assert files == {} and len(notes) == 1 and "is not a regular file" in notes[0]


def test_old_or_damaged_records_are_notes_not_errors(trained, tmp_path):
    def old(record):  # written by an mtl-onnx before fingerprints
        del record["fingerprints"]

    files, _, _, notes = recorded_validation_files(copied(trained[0], tmp_path / "old", old))
    assert files == {} and len(notes) == 1 and "has no fingerprint" in notes[0]

    def damaged(record):
        record["tasks"] = ["topic"]
        record["fingerprints"] = "none"

    files, _, _, notes = recorded_validation_files(copied(trained[0], tmp_path / "damaged", damaged))
    assert files == {} and len(notes) == 1 and "not a valid data record" in notes[0]

    def bad_fingerprint(record):
        path = record["tasks"]["topic"]["validation"]
        record["fingerprints"][path] = {"size": -5, "sha256": "not hex"}

    files, _, _, notes = recorded_validation_files(copied(trained[0], tmp_path / "bad", bad_fingerprint))
    assert files == {} and len(notes) == 1 and "has no fingerprint" in notes[0]
