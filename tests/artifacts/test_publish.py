"""Publishing a folder: the user's folders are safe whatever happens (foreign folders refused, an old artifact kept
until the new one is complete, stale staging of a killed run removed and nothing else, normal permissions, a full
disk or a read-only file system as one line)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mtl.artifacts import publish as publishing
from mtl.artifacts.jsonfile import read_json, write_json
from mtl.artifacts.publish import (
    OWNER_FILE,
    check_target,
    check_writable,
    new_staging,
    remove_stale_staging,
    staged,
    staging_owner,
    write_output_file,
)
from mtl.errors import ConfigError, OutputError


def is_ours(folder):
    return (folder / "ours.txt").is_file()


def make_artifact(folder, content="old"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ours.txt").write_text(content)
    return folder


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_foreign_or_existing_folders_are_refused_without_overwrite(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no mtl-onnx thing; choose another"):
        check_target(foreign, "thing", is_ours, overwrite=True, error=ConfigError)
    ours = make_artifact(tmp_path / "ours")
    with pytest.raises(ConfigError, match="already holds an mtl-onnx thing; pass --overwrite"):
        check_target(ours, "thing", is_ours, overwrite=False, error=ConfigError)
    check_target(ours, "thing", is_ours, overwrite=True, error=ConfigError)
    check_target(tmp_path / "new" / "deeper", "thing", is_ours, overwrite=False, error=ConfigError)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        check_target(tmp_path / "file", "thing", is_ours, overwrite=True, error=ConfigError)


def test_unwritable_targets_are_one_line_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="because .*afile is a file, not a folder"):
        check_writable(tmp_path / "afile" / "out")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(OutputError, match="is a symbolic link to .*gone, which does not exist"):
        check_writable(tmp_path / "dangling")
    (tmp_path / "dangling-parent").symlink_to(tmp_path / "gone-too")
    with pytest.raises(OutputError, match="which does not exist"):
        check_writable(tmp_path / "dangling-parent" / "out")


def test_a_failed_build_leaves_the_old_artifact_and_no_staging(tmp_path):
    target = make_artifact(tmp_path / "model")
    with pytest.raises(RuntimeError):
        with staged(target) as staging:
            (staging / "ours.txt").write_text("new")
            raise RuntimeError("the build failed half-way")
    assert (target / "ours.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(KeyboardInterrupt):
        with staged(target) as staging:
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_complete_build_replaces_the_old_one_whole(tmp_path):
    target = make_artifact(tmp_path / "model")
    (target / "stale-file").write_text("from the old run")
    with staged(target) as staging:
        (staging / "ours.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["ours.txt"]
    assert (target / "ours.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_published_folders_and_files_honour_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        with staged(tmp_path / "model") as staging:
            (staging / "f").write_text("x")
        write_output_file(tmp_path / "report.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o640


def test_stale_staging_of_a_killed_run_goes_and_nothing_else(tmp_path):
    target = tmp_path / "model"
    stale = new_staging(target)
    (stale / OWNER_FILE).write_text(str(dead_pid()))
    live = new_staging(target)  # this process: alive
    retired = tmp_path / ".model.abcd1234.retired"
    retired.mkdir()
    users = [tmp_path / name for name in (".model.backup", ".model.abcd1234.staging.keep", ".other.abcd1234.staging")]
    for folder in users:
        folder.mkdir()
    remove_stale_staging(target)
    assert not stale.exists() and not retired.exists()
    assert live.exists() and staging_owner(live) == os.getpid()
    assert all(folder.exists() for folder in users)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_a_full_disk_or_read_only_file_system_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, code):
    target = make_artifact(tmp_path / "model")

    real_replace = os.replace

    def fail(source, destination):
        # The old model moves aside and back again; only the new one moving in fails.
        if Path(destination) == target and Path(source).name != target.name:
            raise OSError(code, os.strerror(code))
        real_replace(source, destination)

    with pytest.raises(OutputError, match=f"model: cannot be written \\({os.strerror(code)}\\)"):
        with staged(target) as staging:
            monkeypatch.setattr(publishing.os, "replace", fail)
            (staging / "ours.txt").write_text("new")
    monkeypatch.undo()
    assert (target / "ours.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_json_files_are_written_whole_and_never_hold_nan(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": 0.5, "name": "caf\u00e9"})
    with pytest.raises(ValueError):
        write_json(path, {"accuracy": float("nan")})
    assert read_json(path) == {"accuracy": 0.5, "name": "caf\u00e9"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    with pytest.raises(OutputError, match="is a folder"):
        write_output_file(tmp_path, "x")
