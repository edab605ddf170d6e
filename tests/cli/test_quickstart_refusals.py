"""A refused `quickstart` leaves nothing behind: a bad option or a foreign folder is refused before anything is
made, and a run that fails before its model is trained takes back the folders it made."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import mtl.cli.quickstart as quickstart_cli
from mtl.cli import app
from mtl.errors import BackboneNotFoundError


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "-1"], "epochs must be in"),
    (["--max-steps", "-5"], "max_steps must be"),
])
def test_a_bad_option_creates_nothing(tmp_path, args, fragment):
    assert_one_line_error(invoke("quickstart", "--output", tmp_path / "new" / "quickstart", *args), fragment)
    assert tree(tmp_path) == []


def test_a_foreign_folder_is_left_exactly_as_it_was(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert_one_line_error(invoke("quickstart", "--output", folder, "--max-steps", "1"),
                          "holds no mtl-onnx quickstart folder")
    assert tree(tmp_path) == ["mine", "mine/notes.txt"]


def assert_failed_with(result, fragment: str) -> None:
    """Failed after its first step began: a rule line, then one error line."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and fragment in result.stderr
    assert "Traceback" not in result.output


def test_a_run_that_fails_before_its_model_is_trained_takes_back_what_it_made(tmp_path, monkeypatch):
    def missing_backbone(*args, **kwargs):
        raise BackboneNotFoundError("sentence-transformers/all-MiniLM-L6-v2: not in the local cache")

    monkeypatch.setattr(quickstart_cli, "run_training", missing_backbone)
    assert_failed_with(invoke("quickstart", "--output", tmp_path / "a" / "b" / "quickstart"), "not in the local")
    assert tree(tmp_path) == []  # the folders above it that it made go too, and the claim's lock
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_failed_with(invoke("quickstart", "--output", empty), "not in the local cache")
    assert tree(tmp_path) == ["empty"]
