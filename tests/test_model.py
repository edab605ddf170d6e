import pytest
import torch

from mtl.errors import BackboneNotFoundError, CheckpointError, ConfigError
from mtl.model import MultitaskModel, load_backbone
from tests.factory import CHECKPOINT_INPUTS, demo_texts, encode, make_model

TEXTS = demo_texts(8)[:6]


def test_every_architecture_gives_all_task_logits_from_one_pass(backbone_dir, arch):
    model, tokenizer = make_model(backbone_dir)
    model.eval()
    # What the tokenizer emits and the forward takes: DistilBERT's tokenizer emits token types its forward refuses.
    assert model.model_config.input_names == CHECKPOINT_INPUTS[arch]
    inputs = encode(tokenizer, TEXTS, model.model_config.input_names)
    calls = []
    model.encoder.backbone.register_forward_hook(lambda *args: calls.append(1))
    topic, sentiment = model(**inputs)["logits"]
    assert topic.shape == (6, 4) and sentiment.shape == (6, 3)
    assert len(calls) == 1
    routed = model(**inputs, task="sentiment")["logits"]
    assert len(routed) == 1 and torch.allclose(routed[0], sentiment)


def test_unknown_task_is_refused(tiny_bert):
    model, tokenizer = make_model(tiny_bert)
    with pytest.raises(ConfigError, match="unknown task 'spam'; valid: topic, sentiment"):
        model(**encode(tokenizer, TEXTS, model.model_config.input_names), task="spam")


def test_mixed_batch_loss_is_each_task_scored_on_its_own_examples(tiny_bert):
    model, tokenizer = make_model(tiny_bert)
    model.eval()  # no dropout: the two computations must agree exactly
    inputs = encode(tokenizer, TEXTS, model.model_config.input_names)
    task_ids = torch.tensor([0, 1, 1, 0, 1, 0])
    labels = torch.tensor([3, 2, 0, 1, 1, 0])
    mixed = model(**inputs, task_ids=task_ids, labels=labels)["loss"]
    total = 0.0
    for index, task in enumerate(("topic", "sentiment")):
        rows = task_ids == index
        logits = model(**{k: v[rows] for k, v in inputs.items()}, task=task)["logits"][0]
        total += torch.nn.functional.cross_entropy(logits, labels[rows], reduction="sum")
    torch.testing.assert_close(mixed, total / 6)


def test_mean_pooling_ignores_padding(tiny_bert):
    model, tokenizer = make_model(tiny_bert, pooling="mean")
    model.eval()
    names = model.model_config.input_names
    alone = model.encoder(**encode(tokenizer, ["short text"], names))
    padded = model.encoder(**encode(tokenizer, ["short text", "a much longer text with many more words in it"], names))
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)


def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_the_three_freezing_scenarios(tiny_bert):
    model, _ = make_model(tiny_bert)
    everything = {name for name, _ in model.named_parameters()}
    heads = {n for n in everything if n.startswith("heads.")}
    sentiment_head = {n for n in heads if n.startswith("heads.sentiment.")}

    model.freeze(backbone=True, heads=("topic", "sentiment"))  # pure feature extractor
    assert trainable(model) == set() and model.num_trainable_parameters() == 0

    model, _ = make_model(tiny_bert)
    model.freeze(backbone=True)
    assert trainable(model) == heads

    model, _ = make_model(tiny_bert)
    model.freeze(heads=("sentiment",))
    assert trainable(model) == everything - sentiment_head

    with pytest.raises(ConfigError, match="cannot freeze unknown head"):
        model.freeze(heads=("nope",))


def test_save_and_reload_give_bit_identical_logits(backbone_dir, tmp_path):
    model, tokenizer = make_model(backbone_dir)
    torch.nn.init.normal_(model.heads["topic"][0].weight)  # not the init a fresh model would get
    model.eval()
    model.save_pretrained(tmp_path / "ckpt", tokenizer)
    reloaded = MultitaskModel.from_pretrained(tmp_path / "ckpt")
    assert reloaded.model_config == model.model_config
    inputs = encode(tokenizer, TEXTS, model.model_config.input_names)
    for before, after in zip(model(**inputs)["logits"], reloaded(**inputs)["logits"]):
        assert torch.equal(before, after)


def test_incomplete_checkpoint_names_the_missing_files(tiny_bert, tmp_path):
    model, tokenizer = make_model(tiny_bert)
    model.save_pretrained(tmp_path / "ckpt", tokenizer)
    weights = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="not a complete mtl-onnx checkpoint \\(missing model.safetensors\\)"):
        MultitaskModel.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: cannot load the weights"):
        MultitaskModel.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not a valid mtl-onnx model config"):
        MultitaskModel.from_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        MultitaskModel.from_pretrained(tmp_path / "elsewhere")


def test_backbone_that_is_not_available_offline_is_one_clear_error():
    with pytest.raises(BackboneNotFoundError, match="backbone 'no-such-org/no-such-model' could not be loaded"):
        load_backbone("no-such-org/no-such-model")
