"""A tampered or mismatched checkpoint is refused when it loads, with one `CheckpointError` naming the file and every
key that is wrong: weights of the wrong dtype or shape, missing or extra tensors, a file that is not (all)
safetensors, heads that do not match config.json's labels, encoder sizes out of range (refused before anything is
built), a tokenizer whose ids the encoder has no rows for; and a backbone folder whose config describes more than
its weight files hold."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from mtl.errors import BackboneNotFoundError, CheckpointError
from mtl.model import MultitaskModel, TorchPredictor, load_backbone

WEIGHTS = "model.safetensors"
HEAD_OUT = "heads.topic.3.weight"


@pytest.fixture
def checkpoint(tiny, tmp_path) -> Path:
    return Path(shutil.copytree(tiny.checkpoint("bert"), tmp_path / "ckpt"))


def rewrite_weights(folder: Path, change) -> None:
    weights = load_file(str(folder / WEIGHTS))
    change(weights)
    save_file(weights, str(folder / WEIGHTS), metadata={"format": "pt"})


def edit_json(path: Path, **values) -> None:
    data = json.loads(path.read_text())
    data.update(values)
    path.write_text(json.dumps(data))


def refusal(folder: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        TorchPredictor.load(folder)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("dtype", [torch.int8, torch.float64, torch.float16])
def test_a_weight_of_another_dtype_is_named(checkpoint, dtype):
    rewrite_weights(checkpoint, lambda w: w.update({HEAD_OUT: w[HEAD_OUT].to(dtype)}))
    message = refusal(checkpoint)
    assert str(checkpoint / WEIGHTS) in message
    assert f"{HEAD_OUT} is {str(dtype).removeprefix('torch.')}, expected float32" in message


def test_every_wrong_shape_missing_and_unexpected_key_is_named_in_one_error(checkpoint):
    def tamper(weights):
        name = next(n for n in weights if n.endswith("word_embeddings.weight"))
        weights[name] = weights[name][:, :-1].contiguous()
        weights["heads.sentiment.0.bias"] = weights["heads.sentiment.0.bias"][:-2].contiguous()
        del weights["heads.topic.0.bias"]
        weights["heads.extra.0.weight"] = torch.zeros(2, 2)

    rewrite_weights(checkpoint, tamper)
    message = refusal(checkpoint)
    assert "word_embeddings.weight has shape" in message
    assert "heads.sentiment.0.bias has shape" in message
    assert "missing heads.topic.0.bias" in message
    assert "unexpected heads.extra.0.weight" in message


def test_heads_whose_label_count_differs_from_config_json_are_named(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    topic = next(t for t in config["tasks"] if t["name"] == "topic")
    topic["labels"] = [*topic["labels"], "Extra"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    message = refusal(checkpoint)
    assert f"{HEAD_OUT} has shape" in message
    assert f"(config.json gives task topic {len(topic['labels'])} labels)" in message


@pytest.mark.parametrize("content", ["truncated", "text", "empty"])
def test_a_file_that_is_not_complete_safetensors_is_named(checkpoint, content):
    data = (checkpoint / WEIGHTS).read_bytes()
    damaged = {"truncated": data[: len(data) - 100], "text": b"this is not a weights file\n", "empty": b""}[content]
    (checkpoint / WEIGHTS).write_bytes(damaged)
    message = refusal(checkpoint)
    assert f"{checkpoint / WEIGHTS}: cannot load the weights" in message
    assert "not a complete safetensors file" in message


@pytest.mark.parametrize("field, value", [
    ("hidden_size", 0), ("num_hidden_layers", 1_000_000_000), ("num_hidden_layers", 1e9), ("vocab_size", -5),
    ("max_position_embeddings", 10 ** 12), ("intermediate_size", "64"), ("num_attention_heads", True),
])
def test_encoder_sizes_out_of_range_are_refused_before_anything_is_built(checkpoint, monkeypatch, field, value):
    import transformers

    def no_build(*args, **kwargs):
        raise AssertionError("an encoder was built from a config that should have been refused")

    monkeypatch.setattr(transformers.AutoModel, "from_config", no_build)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_build)
    edit_json(checkpoint / "encoder" / "config.json", **{field: value})
    message = refusal(checkpoint)
    assert str(checkpoint / "encoder" / "config.json") in message
    assert f"{field} {value!r} (valid: a whole number in" in message


def test_a_tokenizer_with_ids_past_the_embedding_matrix_is_refused(checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = json.loads((checkpoint / "encoder" / "config.json").read_text())["vocab_size"]
    tokenizer.add_tokens([f"newword{i}" for i in range(rows + 3 - len(tokenizer))])
    tokenizer.save_pretrained(checkpoint)
    message = refusal(checkpoint)
    assert "its tokenizer does not fit its encoder" in message
    assert f"the encoder's embedding matrix has {rows} rows" in message


def test_a_padding_id_outside_the_vocabulary_is_refused(checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = json.loads((checkpoint / "encoder" / "config.json").read_text())["vocab_size"]
    tokenizer.add_tokens([f"newword{i}" for i in range(rows + 1 - len(tokenizer))], special_tokens=True)
    tokenizer.pad_token = f"newword{rows - len(AutoTokenizer.from_pretrained(checkpoint))}"
    tokenizer.save_pretrained(checkpoint)
    message = refusal(checkpoint)
    assert f"the padding id {rows} is outside the encoder's {rows} embedding rows" in message


@pytest.mark.parametrize("key, kind", [("tokenizer_file", "fifo"), ("tokenizer_file", "file"),
                                       ("vocab_file", "file"), ("merges_file", "relative"),
                                       ("fast_tokenizer_files", "up")])
def test_a_tokenizer_config_naming_a_file_outside_the_folder_is_refused_unread(checkpoint, tmp_path, monkeypatch,
                                                                               key, kind):
    """transformers opens a tokenizer config's `tokenizer_file`, `vocab_file`, ... as given (relative to the current
    folder) in place of the folder's own file: a copied folder could read any file, or hang on a FIFO."""
    outside = tmp_path / "outside"
    if kind == "fifo":
        os.mkfifo(outside)  # opened by transformers, the load would wait forever for a writer
    else:
        shutil.copy(checkpoint / "tokenizer.json", outside)  # a valid tokenizer, so it would load unnoticed
    monkeypatch.chdir(tmp_path)
    # "relative": opened from the current folder; "up": a name transformers looks up in the model folder
    named = {"relative": "outside", "up": f"../{tmp_path.name}/tokenizer.1.0.json"}.get(kind, str(outside))
    edit_json(checkpoint / "tokenizer_config.json", **{key: [named] if kind == "up" else named})
    message = refusal(checkpoint)
    assert message == (f"{checkpoint / 'tokenizer_config.json'}: its {key} names {named}, which is not a file of the "
                       f"folder; a model folder may only use its own files (remove the entry)")


def test_legacy_file_entries_and_the_folders_own_files_still_load(checkpoint):
    """Entries transformers finds by their standard names whatever the config says (stale paths in them are common
    in hub folders), and a path to the folder's own file, are not refused."""
    edit_json(checkpoint / "tokenizer_config.json", special_tokens_map_file="/home/someone/special_tokens_map.json",
              tokenizer_file=str(checkpoint / "tokenizer.json"), added_tokens_file=None)
    assert len(TorchPredictor.load(checkpoint).predict(["a", "b c"])) == 2


def test_a_tokenizer_that_cannot_encode_text_is_refused_at_load(checkpoint):
    """A WordPiece vocabulary without its unknown token loads, then fails on the first word it does not know: the
    load encodes a probe text, so that failure is one error now, not a traceback at the first prediction."""
    (checkpoint / "tokenizer.json").unlink()
    (checkpoint / "vocab.txt").write_text("\n".join(["[PAD]", "[CLS]", "[SEP]", "[MASK]", "hello"]) + "\n")
    edit_json(checkpoint / "tokenizer_config.json", tokenizer_class="BertTokenizer", unk_token="[NOPE]")
    if (checkpoint / "special_tokens_map.json").exists():  # transformers 5 writes the special tokens in the config
        edit_json(checkpoint / "special_tokens_map.json", unk_token="[NOPE]")
    message = refusal(checkpoint)
    assert message.startswith(f"tokenizer for '{checkpoint}' could not be loaded (")
    assert "[UNK]" in message or "[NOPE]" in message


def test_a_good_checkpoint_still_loads_and_predicts(checkpoint):
    predictor = TorchPredictor.load(checkpoint)
    assert len(predictor.predict(["a", "b c"])) == 2


def test_a_backbone_config_beyond_its_weight_files_is_refused_before_allocating(tiny, tmp_path):
    folder = Path(shutil.copytree(tiny.backbone("bert"), tmp_path / "backbone"))
    edit_json(folder / "config.json", num_hidden_layers=1024, hidden_size=4096, num_attention_heads=64,
              intermediate_size=16384)
    with pytest.raises(BackboneNotFoundError, match="parameters, but its weight files hold") as caught:
        load_backbone(str(folder))
    assert "\n" not in str(caught.value)
    edit_json(folder / "config.json", hidden_size=-1)
    with pytest.raises(BackboneNotFoundError, match=r"hidden_size -1 \(valid: a whole number in 1\.\."):
        load_backbone(str(folder))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=4096), byte=st.integers(min_value=0, max_value=255))
def test_any_one_byte_change_to_the_weights_header_loads_the_same_or_is_one_checkpoint_error(
        checkpoint, position, byte):
    """The header (its first 8 bytes give its length, then JSON) decides what is read: whatever one byte of it
    becomes, the load either gives the very tensors of the intact file or fails with one CheckpointError."""
    original = (checkpoint / WEIGHTS).read_bytes()
    intact = load_file(str(checkpoint / WEIGHTS))
    header_end = 8 + int.from_bytes(original[:8], "little")
    position = position % header_end
    (checkpoint / WEIGHTS).write_bytes(original[:position] + bytes([byte]) + original[position + 1:])
    try:
        model = MultitaskModel.from_pretrained(checkpoint)
    except CheckpointError as err:
        assert "\n" not in str(err)
    else:
        state = model.state_dict()
        assert all(torch.equal(state[name], value) for name, value in intact.items())
    finally:
        (checkpoint / WEIGHTS).write_bytes(original)
