"""Shared fixtures: tiny random encoders of four families, built in-process and saved like a hub model,
each with a small WordPiece tokenizer over the demo data's words."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

# Nothing may reach the network: a missing model must fail fast, as it would offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEMO = Path(__file__).resolve().parent.parent / "mtl" / "demo_data"
ARCHITECTURES = ("bert", "roberta", "distilbert", "deberta-v2")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def demo_texts(limit: int = 400) -> list[str]:
    texts = []
    for path in sorted(DEMO.glob("*/train.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()[: limit // 2]
        texts += [json.loads(line)["text"] for line in lines]
    return texts


def build_tokenizer(with_token_types: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = Counter(w for t in demo_texts() for w in re.findall(r"\w+|[^\w\s]", t.lower()))
    vocab = {tok: i for i, tok in enumerate(SPECIAL + [w for w, _ in words.most_common(600)])}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    names = ["input_ids", "token_type_ids", "attention_mask"] if with_token_types else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=names, model_max_length=128,
    )


def tiny_encoder_config(architecture: str, vocab_size: int):
    from transformers import BertConfig, DebertaV2Config, DistilBertConfig, RobertaConfig

    common = dict(vocab_size=vocab_size, max_position_embeddings=130, pad_token_id=0)
    if architecture == "bert":
        return BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, **common)
    if architecture == "roberta":
        return RobertaConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                             type_vocab_size=1, **common)
    if architecture == "distilbert":
        return DistilBertConfig(dim=32, n_layers=4, n_heads=2, hidden_dim=64, **common)
    if architecture == "deberta-v2":
        return DebertaV2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                               relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
                               type_vocab_size=2, **common)
    raise ValueError(architecture)


def save_tiny_backbone(architecture: str, folder: Path) -> Path:
    """A random tiny encoder + tokenizer saved as a hub-style folder, loaded later by path."""
    import torch
    from transformers import AutoModel

    tokenizer = build_tokenizer(with_token_types=architecture in ("bert", "deberta-v2"))
    torch.manual_seed(0)
    config = tiny_encoder_config(architecture, len(tokenizer))
    kwargs = {"attn_implementation": "eager"} if architecture == "deberta-v2" else {}
    model = AutoModel.from_config(config, **kwargs)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("backbones")
    return {arch: save_tiny_backbone(arch, root / arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_bert(tiny_backbones) -> Path:
    return tiny_backbones["bert"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def demo_rows(dataset: str, split: str, limit: int) -> list[dict]:
    lines = (DEMO / dataset / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:limit]
    return [json.loads(line) for line in lines]


@pytest.fixture
def small_task_files(tmp_path) -> dict[str, tuple[Path, Path]]:
    """Two small tasks from the demo data: topic (4 labels) and sentiment (3 labels)."""
    files = {}
    for task, dataset in (("topic", "ag_news"), ("sentiment", "tweet_eval_sentiment")):
        train = write_jsonl(tmp_path / f"{task}_train.jsonl", demo_rows(dataset, "train", 48))
        valid = write_jsonl(tmp_path / f"{task}_valid.jsonl", demo_rows(dataset, "validation", 24))
        files[task] = (train, valid)
    return files


TASKS = (("topic", ("Business", "Sci/Tech", "Sports", "World")), ("sentiment", ("negative", "neutral", "positive")))


def make_model(backbone_dir: Path, pooling: str = "cls"):
    """A MultitaskModel (topic + sentiment) over a saved tiny encoder, and its tokenizer."""
    from mtl.config import ModelConfig, TaskSpec
    from mtl.model import MultitaskModel, encoder_input_names, load_backbone, load_tokenizer

    tokenizer = load_tokenizer(str(backbone_dir))
    attn = "eager" if "deberta" in backbone_dir.name else None
    backbone = load_backbone(str(backbone_dir), attn)
    config = ModelConfig(
        tasks=tuple(TaskSpec(n, labels) for n, labels in TASKS), backbone=str(backbone_dir), pooling=pooling,
        input_names=encoder_input_names(backbone, tokenizer),
    )
    return MultitaskModel(config, backbone), tokenizer


def encode(tokenizer, texts, input_names):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    return {name: batch[name] for name in input_names}
