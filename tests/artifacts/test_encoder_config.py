"""What the tool reads from an encoder's config.json: the position limit (RoBERTa's offset positions included) and
the layer count, checked on plain dicts and against the real tiny encoders, whose embeddings must hold exactly
that many tokens."""

from __future__ import annotations

import pytest
import torch

from mtl.artifacts.encoder_config import num_layers, position_limit
from mtl.errors import ConfigError
from tests.factory import ARCHITECTURES, LAYERS, POSITIONS


@pytest.mark.parametrize("config, limit", [
    ({"model_type": "bert", "max_position_embeddings": 512, "pad_token_id": 0}, 512),
    ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
    ({"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
    ({"model_type": "roberta", "max_position_embeddings": 514}, 512),  # no pad id: RoBERTa's 1
    ({"model_type": "camembert", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
    ({"model_type": "distilbert", "max_position_embeddings": 512, "pad_token_id": 0}, 512),
    ({"model_type": "deberta-v2", "max_position_embeddings": 512, "pad_token_id": 0}, 512),
    ({"model_type": "gpt2", "n_positions": 1024}, 1024),
    ({"model_type": "bert"}, 512),  # nothing said: the usual 512
])
def test_position_limit(config, limit):
    assert position_limit(config) == limit


def test_num_layers_reads_each_family_s_name():
    assert num_layers({"num_hidden_layers": 12}) == 12
    assert num_layers({"n_layers": 6}) == 6  # DistilBERT
    assert num_layers({"num_layers": 3}) == 3
    with pytest.raises(ConfigError, match="none of num_hidden_layers, n_layers, num_layers"):
        num_layers({"hidden_size": 32})
    with pytest.raises(ConfigError):
        num_layers({"num_hidden_layers": True})  # a bool is not a count


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_limit_is_what_the_encoder_really_holds(tiny, arch):
    """A sequence of exactly `position_limit` tokens runs; where positions are absolute, one more does not."""
    from transformers import AutoConfig, AutoModel

    folder = tiny.backbone(arch)
    config = AutoConfig.from_pretrained(folder)
    limit = position_limit(config.to_dict())
    assert limit == POSITIONS and num_layers(config.to_dict()) == LAYERS
    model = AutoModel.from_pretrained(folder).eval()
    ids = torch.full((1, limit), 7)
    with torch.no_grad():
        assert model(input_ids=ids).last_hidden_state.shape[1] == limit
        if getattr(config, "position_biased_input", True):  # absolute position embeddings (not DeBERTa-v3)
            with pytest.raises((IndexError, RuntimeError)):
                model(input_ids=torch.full((1, limit + 1), 7))
