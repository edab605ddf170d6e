"""What the tool reads from a Hugging Face encoder's `config.json` (a plain dict: the bench reads the file, PyTorch
code passes `backbone.config.to_dict()`), in one place so the limits cannot diverge between stages. No torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtl.errors import ConfigError

DEFAULT_POSITIONS = 512
# Encoders whose position ids start after the padding index (RoBERTa's scheme): `max_position_embeddings` 514
# with pad_token_id 1 holds 512 tokens.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "roberta-prelayernorm",
                    "data2vec-text", "mpnet")


def first_int(config: Mapping[str, Any], *names: str, default: int | None = None) -> int:
    """The first of `names` the config holds as an integer (architectures name the same size differently)."""
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    if default is None:
        raise ConfigError(f"the encoder config has none of {', '.join(names)}; cannot size the model")
    return default


def position_limit(config: Mapping[str, Any]) -> int:
    """The longest input, in tokens, the encoder's position embeddings hold."""
    positions = first_int(config, "max_position_embeddings", "n_positions", default=DEFAULT_POSITIONS)
    if config.get("model_type") in OFFSET_POSITIONS:
        pad = config.get("pad_token_id")
        return positions - (1 if pad is None else int(pad)) - 1
    return positions


def num_layers(config: Mapping[str, Any]) -> int:
    """Transformer layers (BERT-style `num_hidden_layers`, DistilBERT's `n_layers`)."""
    return first_int(config, "num_hidden_layers", "n_layers", "num_layers")


# Sizes an encoder config may give, as (names, smallest, largest): far past any real encoder, yet small enough that
# a tampered config cannot make building the model allocate without bound (the weights on disk bound it further).
SIZE_LIMITS = (
    (("hidden_size", "dim", "d_model"), 1, 1 << 16),
    (("num_hidden_layers", "n_layers", "num_layers"), 1, 1024),
    (("num_attention_heads", "n_heads"), 1, 1 << 12),
    (("intermediate_size", "hidden_dim", "ffn_dim"), 1, 1 << 20),
    (("vocab_size",), 1, 1 << 24),
    (("max_position_embeddings", "n_positions"), 1, 1 << 20),
    (("type_vocab_size",), 0, 1 << 16),
)


def size_problems(config: Mapping[str, Any]) -> list[str]:
    """Every size the config gives outside what an encoder can have (not a whole number, or out of range)."""
    problems = []
    for names, low, high in SIZE_LIMITS:
        for name in (n for n in names if n in config):
            value = config[name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                problems.append(f"{name} {value!r} (valid: a whole number in {low}..{high})")
    return problems
