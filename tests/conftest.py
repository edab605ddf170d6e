"""Fixtures over the one tiny-model factory (`tests.factory`): every architecture's backbone folder, checkpoint
and export, built on first use and cached for the whole session, whichever test module asks first.

    tiny                      the factory itself: tiny.backbone(arch), tiny.checkpoint(arch), tiny.export(arch, ...),
                              tiny.copy_export(arch), tiny.scratch(name)
    arch                      parametrises a test over every architecture (narrow it with
                              @pytest.mark.parametrize("arch", [...]))
    backbone_dir, checkpoint_dir, export_dir    the artifacts of `arch`
    tiny_bert                 the BERT backbone folder (training and CLI tests)
    minilm_export             the real bundled MiniLM, exported (fp32 + int8); only `slow` tests use it
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.factory import ARCHITECTURES, TINY, TinyModels, demo_rows, write_jsonl

# Nothing may reach the network: a missing model must fail fast, as it would offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Every property test draws the same examples on every run: CI must not fail by chance on an example no earlier run
# drew. Set HYPOTHESIS_PROFILE=explore to draw new ones (and add what they find as explicit cases).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory) -> Path:
    """Tokenized training data goes to the session's own cache (`MTL_ONNX_CACHE`, which CLI subprocesses inherit),
    never the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("data-cache")
    os.environ["MTL_ONNX_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny() -> TinyModels:
    return TINY


# Function-scoped on purpose: a session-scoped parametrised fixture makes pytest regroup tests across modules by
# parameter, which tears module-scoped fixtures down and up again. The artifacts themselves are session-cached.
@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    return request.param


@pytest.fixture
def backbone_dir(tiny, arch) -> Path:
    return tiny.backbone(arch)


@pytest.fixture
def checkpoint_dir(tiny, arch) -> Path:
    return tiny.checkpoint(arch)


@pytest.fixture
def export_dir(tiny, arch) -> Path:
    return tiny.export(arch)


@pytest.fixture(scope="session")
def tiny_bert(tiny) -> Path:
    return tiny.backbone("bert")


@pytest.fixture(scope="session")
def minilm_export(tiny):
    return tiny.minilm_export()


@pytest.fixture(scope="session")
def recorded_checkpoint(tiny, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model, train file, validation file): a tiny model trained through the CLI with a validation file, which the
    checkpoint records and fingerprints. Tests read it or copy it; none writes into it."""
    from typer.testing import CliRunner

    from mtl.cli import app

    root = tmp_path_factory.mktemp("recorded-checkpoint")
    train = write_jsonl(root / "topic_train.jsonl", demo_rows("ag_news", "train", 24))
    valid = write_jsonl(root / "topic_valid.jsonl", demo_rows("ag_news", "validation", 12))
    args = ["train", "--task", f"topic={train},{valid}", "--backbone", tiny.backbone("bert"), "--output",
            root / "model", "--max-steps", "2", "--batch-size", "4", "--grad-accumulation", "1"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return root / "model", train, valid


@pytest.fixture
def small_task_files(tmp_path) -> dict[str, tuple[Path, Path]]:
    """Two small tasks from the demo data: topic (4 labels) and sentiment (3 labels)."""
    files = {}
    for task, dataset in (("topic", "ag_news"), ("sentiment", "tweet_eval_sentiment")):
        train = write_jsonl(tmp_path / f"{task}_train.jsonl", demo_rows(dataset, "train", 48))
        valid = write_jsonl(tmp_path / f"{task}_valid.jsonl", demo_rows(dataset, "validation", 24))
        files[task] = (train, valid)
    return files
