"""The one tiny-model factory of the test suite.

Five tiny random encoders, each with the tokenizer family its architecture really uses, saved as hub-style backbone
folders; an mtl-onnx checkpoint over each (topic + sentiment heads); the standard export of each; and the real
bundled all-MiniLM-L6-v2 with a nearest-centroid head per demo task. Everything is built on first use and cached
for the session, so the training, model, export, runtime and CLI tests all share one "bert" (conftest.py exposes
this as fixtures; modules that are not tests may call `TINY` directly). The bench tests' helpers are at the end:
the BERT model they run, a small corpus, the smallest bench command, a bench report of the earlier format, and a
simulated Ctrl-C.

    architecture  tokenizer (family)            emits token types   graph takes token_type_ids
    bert          WordPiece, lowercased         yes                 yes
    roberta       byte-level BPE, <s> </s>      no                  no (pad id 1: positions offset by 2)
    distilbert    WordPiece (BERT's)            yes                 no: its forward takes none, so dropped
    deberta-v2    SentencePiece-style Unigram   yes                 yes (type_vocab_size 2)
    deberta-v3    SentencePiece-style Unigram   yes                 no: type_vocab_size 0, the export drops it

Every encoder has 2 layers of width 32 and a position limit of `POSITIONS` tokens.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "mtl" / "demo_data"
ARCHITECTURES = ("bert", "roberta", "distilbert", "deberta-v2", "deberta-v3")
# The exported graphs' inputs, in the I/O spec's order.
GRAPH_INPUTS = {
    "bert": ("input_ids", "attention_mask", "token_type_ids"),
    "roberta": ("input_ids", "attention_mask"),
    "distilbert": ("input_ids", "attention_mask"),
    "deberta-v2": ("input_ids", "attention_mask", "token_type_ids"),
    "deberta-v3": ("input_ids", "attention_mask"),
}
# The checkpoint's inputs (what the tokenizer emits and the encoder's forward takes), in the tokenizer's order.
CHECKPOINT_INPUTS = {
    "bert": ("input_ids", "token_type_ids", "attention_mask"),
    "roberta": ("input_ids", "attention_mask"),
    "distilbert": ("input_ids", "attention_mask"),
    "deberta-v2": ("input_ids", "token_type_ids", "attention_mask"),
    "deberta-v3": ("input_ids", "token_type_ids", "attention_mask"),
}
TOKENIZER_FAMILY = {"bert": "wordpiece", "distilbert": "wordpiece", "roberta": "bpe", "deberta-v2": "unigram",
                    "deberta-v3": "unigram"}
# Labels sorted, as training orders them (`label_set`).
TASKS = {"topic": ("Business", "Sci/Tech", "Sports", "World"), "sentiment": ("negative", "neutral", "positive")}
POSITIONS = 130  # the longest input every tiny encoder holds
MAX_LENGTH = 32  # the tiny checkpoints' max length (what exports truncate to)
HIDDEN = 32
LAYERS = 2
VOCAB = 800
ALL_PRECISIONS = ("fp32", "int8", "fp16")
# Whether the standard export runs ORT's graph optimisation. Not for DeBERTa: ORT's optimizer spends ~2 s per graph
# walking its relative attention for fusions that reach only LayerNorm and Gelu (the slow test
# test_deberta_exports_with_graph_optimization covers that path).
STANDARD_OPTIMIZE = {arch: not arch.startswith("deberta") for arch in ARCHITECTURES}


def assert_int8_close(got, want) -> None:
    """Two int8 computations of the same logits agree to what dynamic int8 arithmetic allows, not to float32's.

    Dynamic quantisation rounds every activation to one of 256 steps of its own tensor's range (scales per batch).
    Two graphs or kernels that compute the same value to within float32 rounding (another fusion, another
    accumulation order, another CPU's VNNI/AMX path) can land an activation on the neighbouring step: it moves by
    1/255 of that tensor's range, and the logits by about as much of theirs. Two such flips are allowed; a wrong
    head, a wrong scale or another model is off by far more.
    """
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    allowed = 2 / 255 * max(float(np.abs(want).max()), 1e-6)
    assert np.abs(got - want).max() <= allowed, f"int8 logits differ by {np.abs(got - want).max()} > {allowed}"


# --- data ---------------------------------------------------------------------------------------------------------


def demo_rows(dataset: str, split: str, limit: int) -> list[dict]:
    lines = (DEMO / dataset / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:limit]
    return [json.loads(line) for line in lines]


def demo_texts(limit: int = 400) -> list[str]:
    """`limit` texts, half from each bundled demo training file."""
    return [row["text"] for dataset in ("ag_news", "tweet_eval_sentiment")
            for row in demo_rows(dataset, "train", limit // 2)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tokenized_set(model, tokenizer, rows: dict[str, list[dict]], folder: Path):
    """A MultitaskDataset as training builds one: each task's rows ({"text", "label"}) written as JSON Lines in
    `folder`, read, checked and tokenized through a TokenCache there (labels in the model's order)."""
    from mtl.data.dataset import MultitaskDataset
    from mtl.data.tokenized import TokenCache, Tokenization

    cache = TokenCache(folder / "cache")
    tokenization = Tokenization(tokenizer, model.model_config.max_length, model.model_config.input_names)
    parts, task_ids = [], []
    for task, task_rows in rows.items():
        entry = cache.rows(write_jsonl(folder / f"{task}.jsonl", task_rows), "text", "label")
        parts.append(cache.tokens(entry, model.model_config.task(task).labels, tokenization))
        task_ids.append(model.model_config.task_names.index(task))
    return MultitaskDataset(parts, task_ids)


# --- tokenizers ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _trained_core(family: str) -> str:
    """A `tokenizers` Tokenizer of one family trained on the demo data, as JSON (callers get their own copy)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if family == "wordpiece":
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        core.normalizer = normalizers.BertNormalizer(lowercase=True)
        core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        core.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=special, show_progress=False)
        template = ("[CLS]", "[SEP]")
    elif family == "bpe":
        special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids: <s> 0, <pad> 1, </s> 2
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=special, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        template = None
    elif family == "unigram":
        special = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]  # DeBERTa-v3's ids: [PAD] 0, [CLS] 1, [SEP] 2
        core = Tokenizer(models.Unigram())
        core.normalizer = normalizers.NFKC()
        core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=special, unk_token="[UNK]",
                                          show_progress=False)
        template = ("[CLS]", "[SEP]")
    else:
        raise ValueError(f"unknown tokenizer family {family!r}")
    core.train_from_iterator(demo_texts(400), trainer)
    if template is None:
        core.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    else:
        cls, sep = template
        core.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, core.token_to_id(cls)), (sep, core.token_to_id(sep))],
        )
    return core.to_str()


def build_tokenizer(arch: str):
    """The architecture's tokenizer as a transformers PreTrainedTokenizerFast (what AutoTokenizer reloads)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    family = TOKENIZER_FAMILY[arch]
    core = Tokenizer.from_str(_trained_core(family))
    if family == "bpe":
        tokens = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                      sep_token="</s>", mask_token="<mask>")
    else:
        tokens = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    names = ["input_ids", "attention_mask"] if arch == "roberta" else ["input_ids", "token_type_ids",
                                                                      "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=core, model_input_names=names, model_max_length=POSITIONS,
                                   **tokens)


# --- encoders, checkpoints, exports --------------------------------------------------------------------------------


def encoder_config(arch: str, vocab_size: int, pad_token_id: int):
    import transformers as tf

    common = dict(vocab_size=vocab_size, pad_token_id=pad_token_id)
    bert_like = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=POSITIONS, **common)
    if arch == "bert":
        return tf.BertConfig(**bert_like)
    if arch == "roberta":
        # Position ids start after the padding id: 130 tokens need 130 + pad_token_id + 1 positions.
        return tf.RobertaConfig(**{**bert_like, "max_position_embeddings": POSITIONS + pad_token_id + 1},
                                type_vocab_size=1, bos_token_id=0, eos_token_id=2)
    if arch == "distilbert":
        return tf.DistilBertConfig(dim=HIDDEN, n_layers=LAYERS, n_heads=2, hidden_dim=64,
                                   max_position_embeddings=POSITIONS, **common)
    if arch == "deberta-v2":  # relative attention on top of absolute positions, two token types
        return tf.DebertaV2Config(relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
                                  type_vocab_size=2, **bert_like)
    if arch == "deberta-v3":  # log-bucketed relative attention only, no absolute positions, no token types
        return tf.DebertaV2Config(relative_attention=True, position_buckets=16, max_relative_positions=-1,
                                  pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                  norm_rel_ebd="layer_norm", share_att_key=True, type_vocab_size=0, **bert_like)
    raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")


def attn_implementation(model_type: str) -> str | None:
    return "eager" if model_type.startswith("deberta") else None  # DeBERTa-v2 has no SDPA attention


def save_tiny_backbone(arch: str, folder: Path) -> Path:
    """A random tiny encoder + its tokenizer saved as a hub-style folder (loaded later by path, like a hub id)."""
    import torch
    from transformers import AutoModel

    tokenizer = build_tokenizer(arch)
    config = encoder_config(arch, len(tokenizer), tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModel.from_config(config, attn_implementation=attn_implementation(config.model_type))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def make_model(backbone_dir: Path, pooling: str = "cls", max_length: int = 128):
    """A fresh MultitaskModel (topic + sentiment heads) over a saved tiny encoder, and its tokenizer."""
    from transformers import AutoConfig

    from mtl.config import ModelConfig, TaskSpec
    from mtl.model import MultitaskModel, encoder_input_names, load_backbone, load_tokenizer

    tokenizer = load_tokenizer(str(backbone_dir))
    model_type = AutoConfig.from_pretrained(str(backbone_dir)).model_type
    backbone = load_backbone(str(backbone_dir), attn_implementation(model_type))
    config = ModelConfig(
        tasks=tuple(TaskSpec(name, labels) for name, labels in TASKS.items()), backbone=str(backbone_dir),
        pooling=pooling, max_length=max_length, input_names=encoder_input_names(backbone, tokenizer),
    )
    return MultitaskModel(config, backbone), tokenizer


def encode(tokenizer, texts: list[str], input_names, max_length: int = 64) -> dict:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {name: batch[name] for name in input_names}


class TinyModels:
    """Lazily built, session-cached tiny artifacts under one temporary root. Treat what it returns as read-only:
    copy an export (`copy_export`) or use `scratch` to damage or write anything."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._cache: dict[tuple, object] = {}

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="mtl-tests-"))
            atexit.register(shutil.rmtree, self._root, ignore_errors=True)
        return self._root

    def scratch(self, name: str) -> Path:
        """A fresh, empty folder under the session's root."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))

    def _cached(self, key: tuple, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def backbone(self, arch: str) -> Path:
        """A hub-style folder of the architecture's tiny random encoder and tokenizer."""
        return self._cached(("backbone", arch), lambda: save_tiny_backbone(arch, self.scratch(f"backbone-{arch}")))

    def checkpoint(self, arch: str, pooling: str = "cls", max_length: int = MAX_LENGTH) -> Path:
        """An mtl-onnx checkpoint (untrained topic + sentiment heads) over the encoder. A longer `max_length` than
        the default lets real texts end before it (the bench compares padding to max length with dynamic padding)."""

        def build() -> Path:
            import torch

            torch.manual_seed(0)  # the heads' initialisation
            model, tokenizer = make_model(self.backbone(arch), pooling, max_length)
            folder = self.scratch(f"checkpoint-{arch}-{pooling}-{max_length}")
            model.eval().save_pretrained(folder, tokenizer)
            return folder

        return self._cached(("checkpoint", arch, pooling, max_length), build)

    def export(self, arch: str, precisions: tuple[str, ...] = ALL_PRECISIONS, optimize: bool | None = None,
               pooling: str = "cls", max_length: int = MAX_LENGTH) -> Path:
        """The checkpoint's export (by default every precision, optimisation as `STANDARD_OPTIMIZE`), validated by
        the exporter."""
        optimize = STANDARD_OPTIMIZE[arch] if optimize is None else optimize

        def build() -> Path:
            from mtl.export import ExportOptions, export_checkpoint

            output = self.scratch(f"export-{arch}") / "onnx"
            export_checkpoint(self.checkpoint(arch, pooling, max_length), output,
                              ExportOptions(precisions=tuple(precisions), optimize=optimize, threads=1))
            return output

        return self._cached(("export", arch, tuple(precisions), optimize, pooling, max_length), build)

    def copy_export(self, arch: str = "bert", **kwargs) -> Path:
        """A private copy of `export(arch, **kwargs)`, free to damage."""
        target = self.scratch(f"copy-{arch}") / "onnx"
        shutil.copytree(self.export(arch, **kwargs), target)
        return target

    def minilm_checkpoint(self, per_task: int = 96) -> Path:
        """The real bundled all-MiniLM-L6-v2 with a nearest-centroid head per demo task (topic, sentiment)."""
        return self._cached(("minilm-checkpoint", per_task), lambda: _minilm_checkpoint(self.scratch("minilm"),
                                                                                      per_task))

    def minilm_export(self):
        """MiniLM exported with fp32 and int8, int8 checked on the demo validation data; (folder, ExportResult)."""

        def build():
            from mtl.export import ExportOptions, export_checkpoint

            output = self.scratch("export-minilm") / "onnx"
            result = export_checkpoint(self.minilm_checkpoint(), output, ExportOptions(
                precisions=("fp32", "int8"), validation_data=demo_validation_files(self.scratch("demo")),
                threads=2,
                # Nearest-centroid heads sit close to their decision boundaries: int8 flips ~3-5% of them here,
                # where a trained head flips far fewer; the limit is the point of the test, not the default.
                max_int8_drop=3.0, max_int8_f1_drop=3.0))
            return output, result

        return self._cached(("minilm-export",), build)


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


def _minilm_checkpoint(folder: Path, per_task: int) -> Path:
    import torch

    from mtl.config import DEFAULT_BACKBONE, ModelConfig, TaskSpec
    from mtl.data.files import demo_task_files, label_set, read_examples
    from mtl.model import MultitaskModel, encoder_input_names, load_backbone, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(DEFAULT_BACKBONE)
    backbone = load_backbone(DEFAULT_BACKBONE)
    train = {f.name: read_examples(f.train) for f in demo_task_files()}
    tasks = tuple(TaskSpec(name, label_set(e.label for e in examples)) for name, examples in train.items())
    config = ModelConfig(tasks=tasks, max_length=128, input_names=encoder_input_names(backbone, tokenizer))
    model = MultitaskModel(config, backbone).eval()
    with torch.no_grad():
        for spec in tasks:
            sample = train[spec.name][:per_task]
            batch = encode(tokenizer, [e.text for e in sample], config.input_names, max_length=128)
            embeddings = model.encoder(**batch)
            labels = torch.tensor([spec.labels.index(e.label) for e in sample])
            _centroid_head(model.heads[spec.name], embeddings, labels, len(spec.labels))
    model.save_pretrained(folder, tokenizer)
    return folder


def demo_validation_files(folder: Path, limit: int = 250) -> dict[str, Path]:
    """The first `limit` rows of each bundled demo validation file, written to `folder`."""
    from mtl.data.files import demo_task_files

    files = {}
    for task in demo_task_files():
        lines = task.validation.read_text(encoding="utf-8").splitlines()[:limit]
        files[task.name] = folder / f"{task.name}.jsonl"
        files[task.name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


TINY = TinyModels()


# --- the bench tests ---------------------------------------------------------------------------------------------

# A bench report as written before rows were typed records (the committed docs/bench.json of that time, the synthetic
# rows cut to two shapes): readers and writers must keep handling this format.
EARLIER_REPORT = Path(__file__).resolve().parent / "bench" / "data" / "report_before_records.json"


BENCH_MAX_LENGTH = 128  # past most demo texts, so that dynamic padding has something to save


def bench_model() -> tuple[Path, Path]:
    """(checkpoint folder, export folder) of the factory's tiny BERT at the bench's max length, built once per
    session."""
    return (TINY.checkpoint("bert", max_length=BENCH_MAX_LENGTH),
            TINY.export("bert", ("fp32", "int8"), max_length=BENCH_MAX_LENGTH))


def earlier_report() -> dict:
    """A full bench on MiniLM, written before rows were typed records."""
    return json.loads(EARLIER_REPORT.read_text(encoding="utf-8"))


def small_corpus(folder: Path, count: int = 6) -> Path:
    texts = ["Stocks rallied after the central bank cut rates.", "What a terrible game last night!",
             "NASA launched a new space telescope.", "I love this phone.", "The election results are in.",
             "The team won the match in the last minute of the season."]
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": texts[i % len(texts)]}) + "\n" for i in range(count)),
                    encoding="utf-8")
    return path


def tiny_args(checkpoint: Path, onnx: Path, corpus: Path) -> list[str]:
    """The smallest sensible bench: one shape, 1 warm-up, 2 runs, a few texts, no cold start."""
    return ["bench", "--checkpoint", str(checkpoint), "--onnx", str(onnx), "--batch-sizes", "2", "--seq-lengths",
            "8", "--warmup", "1", "--runs", "2", "--corpus", str(corpus), "--text-runs", "1",
            "--text-batch-size", "4", "--no-cold-start"]


def interrupt_second_sweep_cell(monkeypatch) -> None:
    """Make the ONNX Runtime runner raise KeyboardInterrupt on its second sweep cell, as a Ctrl-C would."""
    from mtl.bench.engines import OrtRunner

    original, calls = OrtRunner.sweep_call, []

    def interrupt_on_second_cell(self, mode, feeds):
        calls.append(mode)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, mode, feeds)

    monkeypatch.setattr(OrtRunner, "sweep_call", interrupt_on_second_cell)
