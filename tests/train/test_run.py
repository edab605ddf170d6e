"""Training end to end through the workflow the CLI uses: outputs on disk, resume, output-folder safety."""

import pytest
import torch
from transformers import TrainerCallback

from mtl.artifacts.checkpoint import read_model_config
from mtl.config import ModelOptions, TrainConfig
from mtl.data.files import TaskFiles
from mtl.errors import ConfigError
from mtl.model import MultitaskModel
from mtl.train import run as workflow
from tests.factory import CHECKPOINT_INPUTS, POSITIONS, TASKS, demo_texts, encode, make_model


class StopAfterFirstEpoch(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True


def task_files(small_task_files):
    return [TaskFiles(name, train, valid) for name, (train, valid) in small_task_files.items()]


def train(files, backbone, output, callbacks=(), resume=False, overwrite=False):
    config = TrainConfig(output_dir=str(output), epochs=2, batch_size=8, grad_accumulation=2, logging_steps=1,
                         encoder_lr=5e-4)
    return workflow.train(files, config, ModelOptions(backbone=str(backbone)), overwrite=overwrite, resume=resume,
                          callbacks=list(callbacks))


def weights(folder):
    return MultitaskModel.from_pretrained(folder).state_dict()


def test_resume_continues_where_the_run_stopped(tiny_bert, small_task_files, tmp_path):
    files = task_files(small_task_files)
    straight = train(files, tiny_bert, tmp_path / "straight")
    assert set(straight.metrics) == {"topic", "sentiment"}
    assert (tmp_path / "straight" / "metrics.json").is_file()

    train(files, tiny_bert, tmp_path / "resumed", [StopAfterFirstEpoch()])
    resumed = train(files, tiny_bert, tmp_path / "resumed", resume=True)
    assert resumed.metrics == straight.metrics
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_output_folder_is_protected(tiny_bert, small_task_files, tmp_path):
    files = task_files(small_task_files)
    output = tmp_path / "model"
    train(files, tiny_bert, output)
    with pytest.raises(ConfigError, match="already holds an mtl-onnx model; pass --overwrite"):
        train(files, tiny_bert, output)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not empty and holds no mtl-onnx model"):
        train(files, tiny_bert, foreign)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(files, tiny_bert, tmp_path / "fresh", resume=True)
    train(files, tiny_bert, output, overwrite=True)
    assert not (output / ".staging").exists()


def test_a_bad_file_fails_before_anything_is_written(tiny_bert, small_task_files, tmp_path):
    files = task_files(small_task_files)
    files[1] = TaskFiles("sentiment", files[1].train, tmp_path / "missing.jsonl")
    with pytest.raises(Exception, match="missing.jsonl: file not found"):
        train(files, tiny_bert, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_everything_frozen_is_refused(tiny_bert, small_task_files, tmp_path):
    config = TrainConfig(output_dir=str(tmp_path / "out"), max_steps=1, freeze_backbone=True,
                         freeze_heads=("topic", "sentiment"))
    with pytest.raises(ConfigError, match="every parameter is frozen"):
        workflow.train(task_files(small_task_files), config, ModelOptions(backbone=str(tiny_bert)))


def test_every_architecture_trains_with_max_length_clamped_to_its_positions(backbone_dir, arch, small_task_files,
                                                                             tmp_path):
    """--max-length beyond the encoder's positions is clamped to what the position embeddings hold (RoBERTa's 132
    with pad id 1 hold 130), the checkpoint records the inputs the encoder takes, and training moves weights."""
    config = TrainConfig(output_dir=str(tmp_path / "model"), max_steps=2, batch_size=4, grad_accumulation=1,
                         logging_steps=1, warmup_steps=0, encoder_lr=1e-3)
    result = workflow.train(task_files(small_task_files), config,
                            ModelOptions(backbone=str(backbone_dir), max_length=4096))
    saved = read_model_config(result.output)
    assert saved.max_length == POSITIONS
    assert saved.input_names == CHECKPOINT_INPUTS[arch]
    assert set(result.metrics) == {"topic", "sentiment"}
    initial, tokenizer = make_model(backbone_dir)
    trained = weights(result.output)
    assert any(not torch.equal(trained[n], p) for n, p in initial.state_dict().items() if n.startswith("encoder."))
    # The clamped length is usable: a full-length input runs through the trained encoder.
    model = MultitaskModel.from_pretrained(result.output)
    long_text = " ".join(demo_texts(40))
    inputs = encode(tokenizer, [long_text], saved.input_names, max_length=saved.max_length)
    assert inputs["input_ids"].shape == (1, POSITIONS)
    assert model(**inputs)["logits"][0].shape == (1, len(TASKS["topic"]))
