"""Training outputs and resume state, as a user meets them through the CLI: an output that cannot be the model's
(the current folder, a name the file system refuses, a NUL) is one line before the backbone loads; a symbolic link
to a folder is written through; a full disk during a checkpoint save is one line and leaves only complete
checkpoints, from which --resume continues (a half-written one is skipped); Trainer state that holds pickled code
or is damaged is one line on --resume, and its code never runs."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mtl.artifacts.checkpoint import check_checkpoint
from mtl.cli import app
from mtl.errors import ConfigError, OutputError
from mtl.train.folders import resume_point, settle_output
from tests.factory import demo_rows, write_jsonl

BOGUS_BACKBONE = "/no/such/backbone-folder"


@pytest.fixture
def topic(tmp_path) -> Path:
    return write_jsonl(tmp_path / "topic.jsonl", demo_rows("ag_news", "train", 24))


def train(*args) -> object:
    return CliRunner().invoke(app, ["train", *map(str, args)])


def assert_one_line(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# --- the output, settled before the backbone loads ----------------------------------------------------------------


def test_output_dot_is_refused_before_the_backbone_loads(topic, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for output in (".", str(tmp_path), ".."):
        result = train("--task", f"topic={topic}", "--backbone", BOGUS_BACKBONE, "--output", output)
        line = assert_one_line(result, "is the current folder or one above it")
        assert "backbone" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topic.jsonl"]


@pytest.mark.parametrize("name, says", [("x" * 250, "the name is too long"), ("y" * 300, "the name is too long"),
                                        ("deep/" + "z" * 400 + "/model", "the name is too long")])
def test_a_name_the_file_system_refuses_fails_before_the_backbone_loads(topic, tmp_path, name, says):
    result = train("--task", f"topic={topic}", "--backbone", BOGUS_BACKBONE, "--output", tmp_path / name)
    assert_one_line(result, says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topic.jsonl"]


def test_a_nul_in_the_output_is_one_error(tmp_path):
    with pytest.raises(OutputError, match="cannot hold a NUL"):
        settle_output(Path(f"{tmp_path}/mo\0del"))


def test_a_dangling_link_as_output_fails_before_the_backbone_loads(topic, tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    result = train("--task", f"topic={topic}", "--backbone", BOGUS_BACKBONE, "--output", tmp_path / "link")
    assert_one_line(result, "does not exist")


def test_a_link_to_a_folder_is_written_through(tiny_bert, topic, tmp_path):
    """The model lands in the folder the link names; the link stays a link (as report paths that are links)."""
    target = tmp_path / "models" / "real"
    target.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    result = train("--task", f"topic={topic}", "--backbone", tiny_bert, "--output", link, "--max-steps", "2")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == target.resolve()
    check_checkpoint(target)
    assert not list(tmp_path.glob(".link*")) and not list(target.parent.glob(".real.*"))


# --- full disk, half-written checkpoints, resume ------------------------------------------------------------------


def two_epochs(topic, backbone, output):
    return ["--task", f"topic={topic}", "--backbone", backbone, "--output", output, "--epochs", "2",
            "--batch-size", "4", "--grad-accumulation", "1"]


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_resume_continues(tiny_bert, topic, tmp_path,
                                                                                monkeypatch):
    output, partial = tmp_path / "model", tmp_path / ".model.partial"
    real_save, saves = torch.save, []

    def full_on_the_second_checkpoint(obj, path, *args, **kwargs):
        saves.append(str(path))
        if str(path).endswith("scheduler.pt") and sum(s.endswith("scheduler.pt") for s in saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_on_the_second_checkpoint)
    result = train(*two_epochs(topic, tiny_bert, output))
    assert_one_line(result, "cannot be written (No space left on device)", "--resume")
    monkeypatch.setattr(torch, "save", real_save)
    assert not output.exists()
    kept = sorted(p.name for p in (partial / "checkpoints").iterdir())
    assert len(kept) == 1, kept  # the half-written second checkpoint is gone, the first complete one kept

    # A save killed half-way (no trainer_state.json) is skipped by --resume, not taken for the newest.
    (partial / "checkpoints" / "checkpoint-99999").mkdir()
    shutil.copy(partial / "checkpoints" / kept[0] / "model.safetensors", partial / "checkpoints" / "checkpoint-99999")
    resumed = train(*two_epochs(topic, tiny_bert, output), "--resume")
    assert resumed.exit_code == 0, resumed.output
    check_checkpoint(output)
    assert not partial.exists()
    assert not (output / "checkpoints" / "checkpoint-99999").exists()


@pytest.fixture
def finished_run(tiny_bert, topic, tmp_path) -> Path:
    output = tmp_path / "model"
    result = train("--task", f"topic={topic}", "--backbone", tiny_bert, "--output", output, "--max-steps", "2",
                   "--batch-size", "4", "--grad-accumulation", "1")
    assert result.exit_code == 0, result.output
    return output


class RunsCode:
    """Unpickled without weights_only, this writes the marker file: what a tampered state file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("name", ["rng_state.pth", "optimizer.pt", "scheduler.pt"])
def test_trainer_state_holding_code_is_one_line_and_never_runs(finished_run, tiny_bert, topic, tmp_path, name):
    marker = tmp_path / "MARKER-state-ran-code"
    checkpoint = next((finished_run / "checkpoints").glob("checkpoint-*"))
    torch.save({"python": RunsCode(marker), "state": {}}, checkpoint / name)
    torch.load(checkpoint / name, weights_only=False)  # the file is truly hostile ...
    assert marker.exists()
    marker.unlink()
    result = train("--task", f"topic={topic}", "--backbone", tiny_bert, "--output", finished_run, "--max-steps", "4",
                   "--batch-size", "4", "--grad-accumulation", "1", "--resume")
    assert_one_line(result, f"{name}: cannot be loaded as plain tensors", "--resume will not use it")
    assert not marker.exists()  # ... and resuming from it ran nothing
    check_checkpoint(finished_run)  # the finished model is as it was


@pytest.mark.parametrize("name", ["rng_state.pth", "optimizer.pt", "model.safetensors"])
def test_a_truncated_trainer_state_file_is_one_line(finished_run, tiny_bert, topic, name):
    checkpoint = next((finished_run / "checkpoints").glob("checkpoint-*"))
    data = (checkpoint / name).read_bytes()
    (checkpoint / name).write_bytes(data[: len(data) // 2])
    result = train("--task", f"topic={topic}", "--backbone", tiny_bert, "--output", finished_run, "--max-steps", "4",
                   "--batch-size", "4", "--grad-accumulation", "1", "--resume")
    assert_one_line(result, f"{checkpoint / name}")


def test_a_best_checkpoint_outside_the_run_is_refused(finished_run, tiny_bert, topic, tmp_path):
    import json

    checkpoint = next((finished_run / "checkpoints").glob("checkpoint-*"))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({**state, "best_model_checkpoint": str(elsewhere)}))
    result = train("--task", f"topic={topic}", "--backbone", tiny_bert, "--output", finished_run, "--max-steps", "4",
                   "--batch-size", "4", "--grad-accumulation", "1", "--resume")
    assert_one_line(result, "best_model_checkpoint", "is not a checkpoint of this run")


# --- which checkpoint --resume picks (no training: folders as a save leaves them) ----------------------------------

COMPLETE, NO_STATE, TORN_STATE, NO_OPTIMIZER = "complete", "no trainer state", "torn trainer state", "no optimizer"


def make_checkpoint(folder: Path, kind: str) -> None:
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "scheduler.pt", "rng_state.pth") + (() if kind == NO_OPTIMIZER else
                                                                          ("optimizer.pt",)):
        (folder / name).write_bytes(b"x")
    if kind != NO_STATE:
        (folder / "trainer_state.json").write_text('{"global_step": 3}' if kind != TORN_STATE else '{"global_st')


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.integers(min_value=1, max_value=10_000),
                       st.sampled_from([COMPLETE, NO_STATE, TORN_STATE, NO_OPTIMIZER]), max_size=6))
def test_resume_picks_the_newest_complete_checkpoint(saves):
    root = Path(tempfile.mkdtemp())
    try:
        output = root / "model"
        for step, kind in saves.items():
            make_checkpoint(root / ".model.partial" / "checkpoints" / f"checkpoint-{step}", kind)
        complete = [step for step, kind in saves.items() if kind == COMPLETE]
        if complete:
            assert resume_point(output).name == f"checkpoint-{max(complete)}"
        else:
            with pytest.raises(ConfigError, match="nothing to resume"):
                resume_point(output)
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("change", [{"unknown_field": 1}, {"log_history": "x"}, {"best_metric": "high"},
                                    {"epoch": [1]}])
def test_a_trainer_state_of_the_wrong_shape_is_one_line(finished_run, tiny_bert, topic, change):
    import json

    checkpoint = next((finished_run / "checkpoints").glob("checkpoint-*"))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    (checkpoint / "trainer_state.json").write_text(json.dumps({**state, **change}))
    result = train("--task", f"topic={topic}", "--backbone", tiny_bert, "--output", finished_run, "--max-steps", "4",
                   "--batch-size", "4", "--grad-accumulation", "1", "--resume")
    assert_one_line(result, "trainer_state.json: not a trainer state the run can continue from")


def _loaded(path: Path):
    from transformers.trainer import safe_globals

    with safe_globals():
        return torch.load(path, weights_only=True)


@pytest.mark.parametrize("name, tamper, says", [
    ("rng_state.pth", lambda s: {**s, "python": (3, (1, 2), None)}, "not a random number state"),
    ("rng_state.pth", lambda s: {k: v for k, v in s.items() if k != "cpu"}, "not a random number state"),
    ("optimizer.pt", lambda s: {**s, "param_groups": s["param_groups"][:-1]}, "parameter groups, the model"),
    ("optimizer.pt", lambda s: {**s, "state": {i: {**v, "exp_avg": v["exp_avg"].flatten()[:1]}
                                               for i, v in s["state"].items()}}, "exp_avg is not a tensor of shape"),
    ("optimizer.pt", lambda s: {**s, "param_groups": [{**g, "lr": "fast"} for g in s["param_groups"]]},
     "lr is not a number"),
    ("scheduler.pt", lambda s: {**s, "last_epoch": "x"}, "last_epoch is not a whole number"),
    ("scheduler.pt", lambda s: {**s, "base_lrs": [1.0]}, "base_lrs is not"),
])
def test_trainer_state_that_loads_but_does_not_fit_the_run_is_one_line(finished_run, tiny_bert, topic, name, tamper,
                                                                        says):
    checkpoint = next((finished_run / "checkpoints").glob("checkpoint-*"))
    torch.save(tamper(_loaded(checkpoint / name)), checkpoint / name)
    result = train("--task", f"topic={topic}", "--backbone", tiny_bert, "--output", finished_run, "--max-steps", "4",
                   "--batch-size", "4", "--grad-accumulation", "1", "--resume")
    assert_one_line(result, f"{name}: not the state of the run being resumed", says)
