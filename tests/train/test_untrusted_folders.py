"""A folder someone else made cannot make mtl-onnx run its code: a backbone or checkpoint whose encoder config and
tokenizer config carry an `auto_map` naming a .py file in the folder (which would write a marker file when
imported) is run as a user would, `printf 'y\\n...' | mtl-onnx predict FOLDER --file -`, `export`, `train
--backbone`: transformers never asks on stdin, the marker never appears, every data row comes back, and a folder that
cannot load without its code is one line naming --trust-remote-code. With that option the code does run (which shows
the marker is real)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factory import demo_rows, write_jsonl

PROMPT = "Do you wish to run the custom code"
STDIN = "y\nfirst text to classify\nyes\nsecond text\n"
# The folder's own code: importing it writes the marker; it also works, so a trusting load goes all the way.
EVIL_CODE = '''
from pathlib import Path
Path({marker!r}).write_text("the folder's code ran")
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

class EvilConfig(BertConfig):
    model_type = "evil-bert"

class EvilModel(BertModel):
    config_class = EvilConfig

class EvilTokenizer(PreTrainedTokenizerFast):
    pass
'''


def run_cli(*args, home: Path, stdin: str = STDIN) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_MODULES_CACHE": str(home / "modules")}
    return subprocess.run([sys.executable, "-m", "mtl.cli", *map(str, args)], input=stdin, capture_output=True,
                          text=True, env=env, timeout=300)


def plant(config_dir: Path, tokenizer_dir: Path, marker: Path, known_type: bool) -> None:
    """An auto_map pointing at evil.py in the encoder config and the tokenizer config; with `known_type` False the
    model type and tokenizer class are the folder's own, so nothing but its code could load them."""
    for folder in {config_dir, tokenizer_dir}:
        (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = json.loads((config_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    if not known_type:
        config["model_type"] = "evil-bert"
    (config_dir / "config.json").write_text(json.dumps(config))
    tokenizer = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    tokenizer["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    if not known_type:
        tokenizer["tokenizer_class"] = "EvilTokenizer"
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "MARKER-the-folder-ran-code"


def evil_checkpoint(tiny, tmp_path, marker, known_type: bool) -> Path:
    folder = Path(shutil.copytree(tiny.checkpoint("bert"), tmp_path / f"ckpt-{known_type}"))
    plant(folder / "encoder", folder, marker, known_type)
    return folder


def assert_no_code_ran(result: subprocess.CompletedProcess, marker: Path) -> None:
    assert not marker.exists(), "the folder's code ran"
    assert PROMPT not in result.stdout and PROMPT not in result.stderr
    assert "Traceback" not in result.stderr


def assert_one_line_naming_the_option(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "--trust-remote-code" in errors[0] and "auto_map" in errors[0]


def test_predict_on_a_checkpoint_with_an_auto_map_runs_no_code_and_keeps_every_row(tiny, tmp_path, marker):
    folder = evil_checkpoint(tiny, tmp_path, marker, known_type=True)
    result = run_cli("predict", folder, "--file", "-", home=tmp_path)
    assert_no_code_ran(result, marker)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == STDIN.splitlines()  # "y" and "yes" are data, not an answer


def test_predict_on_a_checkpoint_that_needs_its_code_is_one_line_naming_the_option(tiny, tmp_path, marker):
    folder = evil_checkpoint(tiny, tmp_path, marker, known_type=False)
    result = run_cli("predict", folder, "--file", "-", home=tmp_path)
    assert_no_code_ran(result, marker)
    assert_one_line_naming_the_option(result)
    assert result.stdout == ""


def test_a_tokenizer_that_needs_its_code_is_refused_the_same_way(tiny, tmp_path, marker):
    folder = Path(shutil.copytree(tiny.checkpoint("bert"), tmp_path / "ckpt"))
    plant(folder, folder, marker, known_type=True)
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer, "tokenizer_class": "EvilTokenizer"}))
    result = run_cli("predict", folder, "--file", "-", home=tmp_path)
    assert_no_code_ran(result, marker)
    assert_one_line_naming_the_option(result)


def test_export_of_a_checkpoint_that_needs_its_code_is_refused_and_writes_nothing(tiny, tmp_path, marker):
    folder = evil_checkpoint(tiny, tmp_path, marker, known_type=False)
    result = run_cli("export", folder, "--output", tmp_path / "export", home=tmp_path, stdin="yes\n")
    assert_no_code_ran(result, marker)
    assert_one_line_naming_the_option(result)
    assert not (tmp_path / "export").exists()


def test_train_on_a_backbone_that_needs_its_code_is_refused(tiny, tmp_path, marker):
    backbone = Path(shutil.copytree(tiny.backbone("bert"), tmp_path / "backbone"))
    plant(backbone, backbone, marker, known_type=False)
    data = write_jsonl(tmp_path / "topic.jsonl", demo_rows("ag_news", "train", 16))
    result = run_cli("train", "--task", f"topic={data}", "--backbone", backbone, "--output", tmp_path / "model",
                     "--max-steps", "1", home=tmp_path, stdin="y\n")
    assert_no_code_ran(result, marker)
    assert_one_line_naming_the_option(result)
    assert not (tmp_path / "model").exists()


def test_with_trust_remote_code_the_folders_code_does_run(tiny, tmp_path, marker):
    """The user's explicit choice: the same folder loads, through its own code, and predicts every row."""
    folder = evil_checkpoint(tiny, tmp_path, marker, known_type=False)
    result = run_cli("predict", folder, "--file", "-", "--trust-remote-code", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "the folder's code ran"
    assert len(result.stdout.splitlines()) == len(STDIN.splitlines())
