import json
from dataclasses import fields

import pytest

from mtl.artifacts.checkpoint import read_model_config, write_model_config
from mtl.config import ModelConfig, ModelOptions, TaskSpec, TrainConfig
from mtl.errors import ConfigError


def test_model_config_round_trips_through_json(tmp_path):
    config = ModelConfig(
        tasks=(TaskSpec("topic", ("a", "b", "c")), TaskSpec("sentiment", ("neg", "pos"))),
        backbone="some/model", pooling="mean", max_length=64, input_names=("input_ids", "attention_mask"),
    )
    write_model_config(tmp_path, config)
    assert read_model_config(tmp_path) == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tasks=(TaskSpec("a", ("x", "y")), TaskSpec("a", ("x", "y")))), "duplicate task names: a"),
        (dict(tasks=(TaskSpec("a", ("x", "y")),), pooling="max"), "unknown pooling 'max'; valid: cls, mean"),
        (dict(tasks=()), "at least one task"),
    ],
)
def test_model_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


def test_task_spec_needs_two_distinct_labels():
    with pytest.raises(ConfigError, match="at least 2 labels"):
        TaskSpec("a", ("x",))
    with pytest.raises(ConfigError, match="duplicate labels"):
        TaskSpec("a", ("x", "x"))


@pytest.mark.parametrize("layers, first", [(12, 9), (6, 4), (4, 3), (1, 0)])
def test_unfreezing_opens_the_top_quarter_by_default(layers, first):
    assert TrainConfig().first_unfrozen_layer(layers) == first


def test_unfreezing_depth_by_count_or_index():
    assert TrainConfig(unfreeze_top_layers=2).first_unfrozen_layer(12) == 10
    assert TrainConfig(unfreeze_from_layer=7).first_unfrozen_layer(12) == 7
    with pytest.raises(ConfigError, match="outside the encoder's layers 0..5"):
        TrainConfig(unfreeze_from_layer=6).first_unfrozen_layer(6)
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(unfreeze_top_layers=1, unfreeze_from_layer=1)


def test_warmup_is_clamped_on_short_runs_and_ratio_wins():
    assert TrainConfig(warmup_steps=500).warmup_for(20_000) == 500
    assert TrainConfig(warmup_steps=500).warmup_for(50) == 5
    assert TrainConfig(warmup_ratio=0.06).warmup_for(1000) == 60


def test_train_config_rejects_unknown_sampling():
    with pytest.raises(ConfigError, match="valid: uniform, proportional, temperature"):
        TrainConfig(sampling="random")


def test_train_config_rejects_unknown_precision_and_keeps_the_throughput_options():
    with pytest.raises(ConfigError, match="unknown precision 'fp8'; valid: auto, fp32, bf16"):
        TrainConfig(precision="fp8")
    config = TrainConfig(group_by_length=False, length_window=7, precision="bf16")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_model_options_pass_every_shared_field_on_to_the_model_config():
    options = ModelOptions(backbone="some/encoder", pooling="mean", dropout=0.3, max_length=512)
    config = options.model_config([TaskSpec("t", ("a", "b"))], ["input_ids", "attention_mask"], max_length=256)
    shared = {f.name for f in fields(ModelOptions)} & {f.name for f in fields(ModelConfig)}
    assert shared == {"backbone", "pooling", "dropout", "max_length"}
    assert (config.backbone, config.pooling, config.dropout) == ("some/encoder", "mean", 0.3)
    assert config.max_length == 256  # the encoder's limit, as training clamps it
    assert config.tasks == (TaskSpec("t", ("a", "b")),) and config.input_names == ("input_ids", "attention_mask")
    with pytest.raises(ConfigError, match="unknown pooling"):
        ModelOptions(pooling="max-ish").model_config([TaskSpec("t", ("a", "b"))], ["input_ids"], 8)
