"""The CLI as a user runs it: Typer's runner in-process, and the installed console script as a subprocess."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mtl.artifacts.checkpoint import read_model_config
from mtl.cli import app
from mtl.model import MultitaskModel
from tests.factory import POSITIONS, demo_rows, write_jsonl

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def one_error_line(result, expected):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert expected in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    """One small model trained through the CLI, shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("cli")
    topic = write_jsonl(root / "topic.jsonl", demo_rows("ag_news", "train", 40))
    topic_valid = write_jsonl(root / "topic_valid.jsonl", demo_rows("ag_news", "validation", 20))
    sentiment = write_jsonl(root / "sentiment.jsonl", demo_rows("tweet_eval_sentiment", "train", 40))
    result = invoke("train", "--task", f"topic={topic},{topic_valid}", "--task", f"sentiment={sentiment}",
                    "--backbone", tiny_bert, "--output", root / "model", "--epochs", 1, "--batch-size", 8,
                    "--max-length", 4096, "--grad-accumulation", 1, "--sampling", "uniform", "--progressive-unfreezing")
    assert result.exit_code == 0, result.output
    assert "model saved in" in result.output and "validation, best checkpoint" in result.output
    assert read_model_config(root / "model").max_length == POSITIONS  # --max-length clamped to the positions
    return root


def test_evaluate_prints_a_table_and_writes_json(trained):
    out = trained / "metrics.json"
    result = invoke("evaluate", trained / "model", "--task", f"topic={trained / 'topic_valid.jsonl'}", "--json", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"topic"} and set(metrics["topic"]) == {"accuracy", "macro_f1", "macro_recall"}
    # the same figures training reported for its best (and only) epoch
    saved = json.loads((trained / "model" / "metrics.json").read_text())["validation"]["topic"]
    assert metrics["topic"] == pytest.approx(saved, abs=1e-9)
    assert "topic" in result.output and "accuracy" in result.output


def test_predict_gives_one_line_per_input(trained):
    texts = ["Stocks rallied after the rate cut.", "", "I love this!"]
    result = invoke("predict", trained / "model", *texts)
    # every row is written, the empty one as an error record, and the exit code says a row failed
    assert result.exit_code == 1
    assert "1 of 3 rows could not be classified" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == texts
    assert rows[1] == {"text": "", "error": "empty text"}
    for row in (rows[0], rows[2]):
        assert set(row["predictions"]) == {"topic", "sentiment"}
        topic = row["predictions"]["topic"]
        assert topic["label"] in ("Business", "Sci/Tech", "Sports", "World")
        assert sum(topic["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert topic["score"] == max(topic["probabilities"].values())


def test_predict_reads_files_and_stdin_and_filters_tasks(trained, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("first text\nsecond text\n", encoding="utf-8")
    from_file = invoke("predict", trained / "model", "--file", txt, "--task", "sentiment")
    from_jsonl = invoke("predict", trained / "model", "--file", trained / "topic_valid.jsonl")
    from_stdin = invoke("predict", trained / "model", "--file", "-", input="one\ntwo\nthree\n")
    assert [len(r.stdout.splitlines()) for r in (from_file, from_jsonl, from_stdin)] == [2, 20, 3]
    assert set(json.loads(from_file.stdout.splitlines()[0])["predictions"]) == {"sentiment"}


def test_predict_unknown_task(trained):
    one_error_line(invoke("predict", trained / "model", "hi", "--task", "spam"),
                   "unknown task 'spam'; valid: topic, sentiment")


def test_output_folder_holding_a_model_is_refused_without_overwrite(trained):
    result = invoke("train", "--task", f"topic={trained / 'topic.jsonl'}", "--backbone", "x",
                    "--output", trained / "model")
    one_error_line(result, "already holds an mtl-onnx model; pass --overwrite")


@pytest.fixture
def bad_inputs(tmp_path, tiny_bert):
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "a b", "label": "x"}, {"text": "c d", "label": "y"}])
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": \n')
    (tmp_path / "nolabel.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "blank.jsonl").write_text('{"text": "", "label": "x"}\n')
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "caf\xe9", "label": "x"}\n')
    write_jsonl(tmp_path / "newlabel.jsonl", [{"text": "e", "label": "x"}, {"text": "f", "label": "z"}])
    return tmp_path, good, tiny_bert


@pytest.mark.parametrize(
    "task_args, message",
    [
        (["t={d}/missing.jsonl"], "missing.jsonl: file not found"),
        (["t={d}/empty.jsonl"], "empty.jsonl: no examples"),
        (["t={d}/broken.jsonl"], "broken.jsonl:2: not valid JSON"),
        (["t={d}/nolabel.jsonl"], "nolabel.jsonl:1: missing field 'label'"),
        (["t={d}/blank.jsonl"], "blank.jsonl:1: field 'text': empty text"),
        (["t={d}/latin.jsonl"], "latin.jsonl:1: not valid UTF-8"),
        (["t={good},{d}/newlabel.jsonl"], "newlabel.jsonl:2: label 'z' is not one of the training labels (x, y)"),
        (["t={good}", "t={good}"], "duplicate task names: t"),
        (["nonsense"], "expected NAME=TRAIN_FILE[,VALIDATION_FILE]"),
    ],
)
def test_bad_training_input_is_one_line_and_writes_nothing(bad_inputs, task_args, message):
    folder, good, backbone = bad_inputs
    args = []
    for spec in task_args:
        args += ["--task", spec.format(d=folder, good=good)]
    result = invoke("train", *args, "--backbone", backbone, "--output", folder / "out", "--max-steps", 1)
    one_error_line(result, message)
    assert not (folder / "out").exists()


def test_unknown_backbone_is_one_line(bad_inputs):
    folder, good, _ = bad_inputs
    result = invoke("train", "--task", f"t={good}", "--backbone", "no-such-org/no-such-model", "--output", folder / "o")
    one_error_line(result, "backbone 'no-such-org/no-such-model' could not be loaded")
    assert not (folder / "o").exists()


def test_checkpoint_with_missing_files_is_one_line(trained, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((trained / "model" / "config.json").read_text())
    one_error_line(invoke("predict", broken, "hello"),
                   "not a complete mtl-onnx checkpoint (missing encoder/config.json")


@pytest.mark.slow  # two processes that each import torch and transformers
def test_console_script_runs_as_a_subprocess(trained):
    script = [sys.executable, "-m", "mtl.cli"]
    ok = subprocess.run(script + ["predict", str(trained / "model"), "a", "b"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.splitlines()) == 2
    bad = subprocess.run(script + ["evaluate", str(trained / "model"), "--task", f"nope={trained / 'topic.jsonl'}"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "unknown task 'nope'" in bad.stderr


# --- the loss options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, saved", [
    (["--task-weight", "topic=2", "--task-weight", "sentiment=0.5", "--class-weights", "balanced"],
     {"task_weights": {"topic": 2.0, "sentiment": 0.5}, "class_weights": "balanced", "uncertainty_weighting": False}),
    (["--uncertainty-weighting"], {"task_weights": {}, "class_weights": "none", "uncertainty_weighting": True}),
], ids=["task-and-class-weights", "uncertainty"])
def test_loss_options_are_saved_and_the_model_reloads_and_exports(tiny_bert, small_task_files, tmp_path, options,
                                                                  saved):
    tasks = [a for name, (train, valid) in small_task_files.items() for a in ("--task", f"{name}={train},{valid}")]
    result = invoke("train", *tasks, "--backbone", tiny_bert, "--output", tmp_path / "model", "--max-steps", 2,
                    "--batch-size", 4, "--grad-accumulation", 1, *options)
    assert result.exit_code == 0, result.output
    train_config = json.loads((tmp_path / "model" / "train_config.json").read_text())
    assert {key: train_config[key] for key in saved} == saved
    learned = json.loads((tmp_path / "model" / "metrics.json").read_text()).get("log_variances")
    assert (learned is not None) == saved["uncertainty_weighting"]
    MultitaskModel.from_pretrained(tmp_path / "model")
    exported = invoke("export", tmp_path / "model", "--output", tmp_path / "onnx")
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "onnx" / "model.onnx").is_file()


@pytest.mark.parametrize("options, message", [
    (["--task-weight", "spam=1"], "task weight for unknown task 'spam'; valid: t"),
    (["--task-weight", "t=-1"], "task_weights['t'] must be in [0, 1e+06], got -1.0"),
    (["--task-weight", "t=nan"], "task_weights['t'] must be a number in [0, 1e+06], got nan"),
    (["--task-weight", "t=inf"], "task_weights['t'] must be a number in [0, 1e+06], got inf"),
    (["--task-weight", "t"], "bad --task-weight 't': expected NAME=WEIGHT (a task name and a number)"),
    (["--task-weight", "t=heavy"], "bad --task-weight 't=heavy': expected NAME=WEIGHT"),
    (["--task-weight", "=2"], "bad --task-weight '=2'"),
    (["--task-weight", "t=1", "--task-weight", "t=2"], "--task-weight t is given twice"),
    (["--task-weight", "t=0"], "every task's weight is 0"),
    (["--task-weight", "t=2", "--uncertainty-weighting"], "give task weights or uncertainty weighting, not both"),
])
def test_bad_loss_options_are_one_line_and_write_nothing(bad_inputs, options, message):
    folder, good, backbone = bad_inputs
    result = invoke("train", "--task", f"t={good}", "--backbone", backbone, "--output", folder / "out",
                    "--max-steps", 1, *options)
    one_error_line(result, message)
    assert not (folder / "out").exists() and not (folder / ".out.partial").exists()


def test_unknown_class_weighting_is_refused_by_the_option(bad_inputs):
    folder, good, backbone = bad_inputs
    result = invoke("train", "--task", f"t={good}", "--backbone", backbone, "--output", folder / "out",
                    "--class-weights", "inverse")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'none', 'balanced'" in result.stderr
    assert not (folder / "out").exists()


def test_a_second_run_over_the_same_files_reuses_the_tokenized_data(tiny_bert, small_task_files, tmp_path):
    cache = tmp_path / "cache"
    tasks = [arg for name, (train, valid) in small_task_files.items() for arg in ("--task", f"{name}={train},{valid}")]

    def run(output):
        result = invoke("train", *tasks, "--backbone", tiny_bert, "--output", tmp_path / output, "--max-steps", 2,
                        "--batch-size", 4, "--grad-accumulation", 1, "--data-cache", cache, "--num-proc", 2)
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / output / "metrics.json").read_text())

    first = run("first")
    entries = {path: path.stat().st_mtime_ns for path in cache.glob("*/*/*")}
    # Rows and tokens of 2 tasks x (training, validation) file, each with its entry record.
    assert len([path for path in entries if path.name == "entry.json"]) == 8
    assert run("second") == first  # the same rows, the same tokens, the same seed: the same model
    assert {path: path.stat().st_mtime_ns for path in cache.glob("*/*/*")} == entries  # nothing read or made anew


def test_a_data_cache_that_is_not_a_folder_is_one_line(bad_inputs):
    folder, good, backbone = bad_inputs
    (folder / "taken").write_text("")
    result = invoke("train", "--task", f"topic={good}", "--backbone", backbone, "--output", folder / "model",
                    "--data-cache", folder / "taken")
    one_error_line(result, "cannot use it as the tokenized-data cache")
    assert not (folder / "model").exists()
