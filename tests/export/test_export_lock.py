"""One writer per output: an export (or a Triton repository) into a folder that another run is writing is refused
at once, naming that run's process, instead of both building and the last one replacing the other's; a claim
left by a killed run is taken over; a lock file that is not ours is never touched."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.artifacts.manifest import load_manifest
from mtl.artifacts.publish import LOCK_SUFFIX, claimed
from mtl.cli import app
from mtl.errors import OutputError
from mtl.export import ExportOptions, export_checkpoint, pipeline, triton

TIMEOUT = 300  # seconds a held export may take to reach its hold point or to finish once let go

HOLD = ("import sys\nfrom pathlib import Path\nfrom mtl.artifacts.publish import claimed\n"
        "with claimed(Path(sys.argv[1])):\n    print('held', flush=True)\n    sys.stdin.readline()\n")


def lock_of(target: Path) -> Path:
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def holder(tmp_path):
    """A separate process that holds the claim on tmp_path/onnx until the test ends."""
    target = tmp_path / "onnx"
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield target, process.pid
    process.stdin.close()
    process.wait(TIMEOUT)


def test_an_export_into_a_folder_another_process_writes_is_refused_before_any_work(tiny, holder):
    target, pid = holder
    with pytest.raises(OutputError, match=f"another mtl-onnx run \\(process {pid}\\) is writing it"):
        with claimed(target):
            pass
    result = CliRunner().invoke(app, ["export", str(tiny.checkpoint("bert")), "--output", str(target)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {target}: another mtl-onnx run (process {pid}) is writing it; wait for it to finish "
                     f"or stop it"]
    assert "loaded the checkpoint" not in result.output  # refused before the checkpoint was loaded
    assert not target.exists() and lock_of(target).is_file()  # the holder's claim is left as it was


def test_two_exports_at_once_the_second_is_refused_and_the_first_completes(tiny, tmp_path, monkeypatch):
    target = tmp_path / "onnx"
    reached, release = threading.Event(), threading.Event()
    real_build = pipeline._build

    def held_build(*args, **kwargs):
        reached.set()
        assert release.wait(TIMEOUT)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_build", held_build)
    _second_writer_refused(
        lambda: export_checkpoint(tiny.checkpoint("bert"), target, ExportOptions(threads=1)),
        lambda: export_checkpoint(tiny.checkpoint("bert"), target, ExportOptions(threads=1, overwrite=True)),
        reached, release)
    assert load_manifest(target).task_names  # the first export is complete and valid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # no lock, no staging left


def test_a_claim_left_by_a_killed_run_is_taken_over(tiny, tmp_path):
    target = tmp_path / "onnx"
    lock_of(target).write_text(str(dead_pid()))  # the file stays when a run is killed; its flock does not
    result = CliRunner().invoke(app, ["export", str(tiny.checkpoint("bert")), "--output", str(target),
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert load_manifest(target).task_names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_a_lock_file_that_is_not_ours_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "onnx"
    lock_of(target).write_text("my own notes, not a pid\n")
    with pytest.raises(OutputError, match="is not an mtl-onnx lock file, so .* is not written; move it away"):
        with claimed(target):
            pass
    assert lock_of(target).read_text() == "my own notes, not a pid\n"
    lock_of(target).unlink()
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("kept")
    lock_of(target).symlink_to(elsewhere)  # a planted link is never followed
    with pytest.raises(OutputError, match="the lock of .* cannot be taken"):
        with claimed(target):
            pass
    assert elsewhere.read_text() == "kept" and lock_of(target).is_symlink()


def test_a_triton_repository_another_run_writes_is_refused(tiny, tmp_path, monkeypatch):
    export_folder = tiny.export("bert")
    repository = tmp_path / "triton"
    reached, release = threading.Event(), threading.Event()
    real_validate = triton.validate_triton_model

    def held_validate(folder):
        reached.set()
        assert release.wait(TIMEOUT)
        return real_validate(folder)

    monkeypatch.setattr(triton, "validate_triton_model", held_validate)
    _second_writer_refused(lambda: triton.write_triton_repository(export_folder, repository),
                           lambda: triton.write_triton_repository(export_folder, repository, overwrite=True),
                           reached, release)
    assert (repository / "mtl" / "config.pbtxt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["triton"]


def _second_writer_refused(first, second, reached: threading.Event, release: threading.Event) -> None:
    """Run `first` in a thread until it holds its output (`reached`), check that `second` is refused naming this
    process, then let `first` finish: it must complete without an error."""
    outcome = {}

    def run_first():
        try:
            first()
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=run_first, daemon=True)
    thread.start()
    try:
        assert reached.wait(TIMEOUT), outcome
        with pytest.raises(OutputError, match=f"another mtl-onnx run \\(process {os.getpid()}\\) is writing it"):
            second()
    finally:
        release.set()
        thread.join(TIMEOUT)
    assert "error" not in outcome, outcome.get("error")
