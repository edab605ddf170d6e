"""Tiny random encoders (BERT, RoBERTa, DistilBERT, DeBERTa-v2) saved as mtl-onnx checkpoints, the real MiniLM
with a nearest-centroid head per demo task, and their exports; built once per test session and shared between the
export, runtime and CLI test modules (a plain cache, not fixtures, so that one build serves every module)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

ARCHS = ("bert", "roberta", "distilbert", "deberta-v2")
TASKS = {"topic": ("World", "Sports", "Business", "Sci/Tech"), "sentiment": ("negative", "neutral", "positive")}
MAX_LENGTH = 32
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a an and or of to in on for with is was are were be it this that movie film great terrible good "
         "bad awful love hate stocks market shares rally bank rates team win won lost game match season player "
         "election government president minister war peace science space nasa computer software phone").split()
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")

_root = Path(tempfile.mkdtemp(prefix="mtl-export-tests-"))
atexit.register(shutil.rmtree, _root, ignore_errors=True)


def scratch(name: str) -> Path:
    """A fresh folder under the session's temporary root."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_root))


def tiny_tokenizer(with_token_types: bool = True):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokens = SPECIALS + WORDS + LETTERS + [f"##{c}" for c in LETTERS]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    names = ["input_ids", "token_type_ids", "attention_mask"] if with_token_types else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=names, model_max_length=MAX_LENGTH,
    )


def tiny_backbone(arch: str, vocab_size: int):
    import transformers as tf

    common = dict(vocab_size=vocab_size, pad_token_id=0)
    bert_like = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64, **common)
    configs = {
        "bert": lambda: tf.BertConfig(**bert_like),
        "roberta": lambda: tf.RobertaConfig(type_vocab_size=1, **bert_like),
        "distilbert": lambda: tf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                  max_position_embeddings=64, **common),
        # DeBERTa-v3 style: relative attention with log buckets, no absolute positions, no token types.
        "deberta-v2": lambda: tf.DebertaV2Config(
            relative_attention=True, position_buckets=8, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
            position_biased_input=False, norm_rel_ebd="layer_norm", share_att_key=True, type_vocab_size=0,
            **bert_like),
    }
    kwargs = {"attn_implementation": "eager"} if arch == "deberta-v2" else {}
    backbone = tf.AutoModel.from_config(configs[arch](), **kwargs)
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None  # as mtl.model.load_backbone does: CLS pooling reads the raw first token
    return backbone


def build_checkpoint(arch: str, folder: Path, pooling: str = "cls") -> Path:
    import torch

    from mtl.config import ModelConfig, TaskSpec
    from mtl.model import MultitaskModel, encoder_input_names

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(with_token_types=arch not in ("roberta",))
    backbone = tiny_backbone(arch, len(tokenizer))
    config = ModelConfig(
        tasks=tuple(TaskSpec(name, labels) for name, labels in TASKS.items()), backbone=f"tiny-{arch}",
        pooling=pooling, max_length=MAX_LENGTH, input_names=encoder_input_names(backbone, tokenizer),
    )
    model = MultitaskModel(config, backbone).eval()
    model.save_pretrained(folder, tokenizer)
    return folder


@functools.lru_cache(maxsize=None)
def tiny_checkpoint(arch: str, pooling: str = "cls") -> Path:
    return build_checkpoint(arch, scratch(f"ckpt-{arch}-{pooling}"), pooling)


ALL_PRECISIONS = ("fp32", "int8", "fp16")


@functools.lru_cache(maxsize=None)
def tiny_export(arch: str, precisions: tuple[str, ...] = ALL_PRECISIONS, optimize: bool = True,
                pooling: str = "cls") -> Path:
    """The standard export of a tiny checkpoint (every variant, optimisation on); treat it as read-only, and
    copy it (`copy_export`) to damage it."""
    from mtl.export import ExportOptions, export_checkpoint

    output = scratch(f"export-{arch}") / "onnx"
    export_checkpoint(tiny_checkpoint(arch, pooling), output,
                      ExportOptions(precisions=precisions, optimize=optimize, threads=1))
    return output


def _centroid_head(head, embeddings, labels, num_labels: int) -> None:
    """Make a TaskHead a nearest-centroid classifier: Linear(h,h) = identity shifted so that ReLU passes every
    value, then Linear(h,n) scores c.x - |c|^2/2 (argmax = nearest centroid). A real classifier without training,
    so that the int8 accuracy check compares meaningful figures."""
    import torch

    hidden = embeddings.shape[1]
    shift = float(-embeddings.min()) + 5.0
    centroids = torch.stack([embeddings[labels == k].mean(0) for k in range(num_labels)])  # (n, hidden)
    with torch.no_grad():
        head[0].weight.copy_(torch.eye(hidden))
        head[0].bias.fill_(shift)
        head[3].weight.copy_(centroids)
        head[3].bias.copy_(-(centroids @ torch.full((hidden,), shift)) - 0.5 * (centroids**2).sum(1))


@functools.lru_cache(maxsize=None)
def minilm_checkpoint(per_task: int = 96) -> Path:
    """The real bundled all-MiniLM-L6-v2 with a centroid head per demo task (topic, sentiment)."""
    import torch

    from mtl.config import DEFAULT_BACKBONE, ModelConfig, TaskSpec
    from mtl.data.files import demo_task_files, label_set, read_examples
    from mtl.model import MultitaskModel, encoder_input_names, load_backbone, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(DEFAULT_BACKBONE)
    backbone = load_backbone(DEFAULT_BACKBONE)
    train = {f.name: read_examples(f.train) for f in demo_task_files()}
    tasks = tuple(TaskSpec(name, label_set(examples)) for name, examples in train.items())
    config = ModelConfig(tasks=tasks, max_length=128, input_names=encoder_input_names(backbone, tokenizer))
    model = MultitaskModel(config, backbone).eval()
    with torch.no_grad():
        for spec in tasks:
            sample = train[spec.name][:per_task]
            batch = tokenizer([e.text for e in sample], truncation=True, max_length=128, padding=True,
                              return_tensors="pt")
            embeddings = model.encoder(**{name: batch[name] for name in config.input_names})
            labels = torch.tensor([spec.labels.index(e.label) for e in sample])
            _centroid_head(model.heads[spec.name], embeddings, labels, len(spec.labels))
    folder = scratch("ckpt-minilm")
    model.save_pretrained(folder, tokenizer)
    return folder


def demo_validation_files(limit: int = 250) -> dict[str, Path]:
    """The first `limit` rows of each bundled demo validation file."""
    from mtl.data.files import demo_task_files

    folder = scratch("demo-validation")
    files = {}
    for task in demo_task_files():
        lines = task.validation.read_text(encoding="utf-8").splitlines()[:limit]
        files[task.name] = folder / f"{task.name}.jsonl"
        files[task.name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


@functools.lru_cache(maxsize=None)
def minilm_export() -> tuple[Path, object]:
    """MiniLM exported with fp32 and int8, int8 checked on the demo validation data; (folder, ExportResult)."""
    from mtl.export import ExportOptions, export_checkpoint

    output = scratch("export-minilm") / "onnx"
    result = export_checkpoint(minilm_checkpoint(), output, ExportOptions(
        precisions=("fp32", "int8"), validation_data=demo_validation_files(), threads=2,
        # Nearest-centroid heads sit close to their decision boundaries: int8 flips ~3-5% of them here, where a
        # trained head flips far fewer; the limit is the point of the test, not the default.
        max_int8_drop=3.0))
    return output, result


def copy_export(arch: str = "bert", **kwargs) -> Path:
    target = scratch(f"copy-{arch}") / "onnx"
    shutil.copytree(tiny_export(arch, **kwargs), target)
    return target
