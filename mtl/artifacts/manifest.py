"""The manifest of an export folder: the only contract between export (which writes it) and the runtime (which
reads it). No torch here.

    manifest.json   format, format_version, tasks and labels in order, max_length, pooling, hidden_size,
                    opset, input_names, pad_token_id, tokenizer file, graphs (inputs/outputs with dynamic axes),
                    variants (per precision: its files, settings, validation figures and the ONNX Runtime
                    session config its graphs run with), library versions
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mtl.artifacts.encoder_config import position_limit
from mtl.artifacts.io_spec import ENCODER_GRAPH, FUSED_GRAPH, HEAD_GRAPH, GraphSpec, logits_name, token_inputs
from mtl.artifacts.jsonfile import write_json
from mtl.config import ModelConfig, TaskSpec
from mtl.errors import ConfigError, ManifestError

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "mtl-onnx/export"
FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"
ENCODER_CONFIG_FILE = "config.json"  # the encoder's Hugging Face config, for tools such as Optimum
PRECISIONS = ("fp32", "int8", "fp16")
DEVICES = ("cpu", "cuda")

PRECISION_CHOICES = ("auto", *PRECISIONS)
EXECUTIONS = ("fused", "split")  # one graph for every head, or the encoder then the requested heads
# What "auto" picks, best first, per device: int8 is the CPU variant, fp16 the GPU one.
AUTO_PRECISION = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32")}
# An int8 variant's validation status: checked on labelled data and within the limits, kept past them because the
# user said so, or never checked on labelled data (only for shapes and finite values). "auto" runs only the first
# two: int8 is lossy, and an unchecked one may be far off on real text.
CHECKED, FORCED, UNCHECKED = "checked", "forced", "unchecked"
# The ONNX Runtime session config entries a variant may carry (its graphs were built to run with them) and the form
# of each value. The runtime applies them to every session of the variant; any other key is refused on load, not
# ignored, so that a variant never silently runs otherwise than it was built and validated.
SESSION_CONFIG_VALUES = {
    "optimization.disable_specified_optimizers": re.compile(r"[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*"),  # optimizer names
}
CHECK_INT8_HINT = ("check it on labelled data with `mtl-onnx export CHECKPOINT --output FOLDER --overwrite "
                   "--precision fp32,int8 --validation-data TASK=FILE`, or ask for it with --precision int8")


def check_choices(precision: str = "auto", device: str = "cpu", execution: str = "fused") -> None:
    """Reject an unknown choice before anything is loaded, naming the valid ones."""
    for what, value, valid in (("precision", precision, PRECISION_CHOICES), ("device", device, DEVICES),
                               ("execution", execution, EXECUTIONS)):
        if value not in valid:
            raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def choose_precision(manifest: Manifest, folder: Path, precision: str, device: str) -> str:
    """The variant to run: `precision` itself if exported, or for "auto" the best one present for `device`."""
    check_choices(precision, device)
    present = list(manifest.variants)
    if precision == "auto":
        choice = next(p for p in AUTO_PRECISION[device] + tuple(present) if p in present)
        if choice == "int8" and manifest.variants["int8"].validation.get("status") not in (CHECKED, FORCED):
            log.warning("%s: its int8 variant was not checked on labelled data, so this runs fp32; %s", folder,
                        CHECK_INT8_HINT)
            return "fp32"
        return choice
    if precision not in present:
        raise ConfigError(f"precision {precision!r} was not exported to {folder} (present: {', '.join(present)}); "
                          f"export it with `mtl-onnx export --precision ...`")
    built_for = manifest.variants[precision].device
    if built_for not in ("any", device):
        log.info("the %s variant is built for %s, not %s: expect it to be slow", precision, built_for, device)
    return precision


def is_export_folder(folder: Path) -> bool:
    return (Path(folder) / MANIFEST_FILE).is_file()


@dataclass(frozen=True)
class VariantFiles:
    """Paths, relative to the export folder, of one precision's graphs. Variants may share a file: int8 keeps
    the fp32 heads."""

    encoder: str
    model: str
    heads: dict[str, str]

    def all(self) -> list[str]:
        return [self.encoder, self.model, *self.heads.values()]

    def to_dict(self) -> dict[str, Any]:
        return {ENCODER_GRAPH: self.encoder, FUSED_GRAPH: self.model, HEAD_GRAPH: dict(self.heads)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantFiles:
        heads = {str(k): str(v) for k, v in data[HEAD_GRAPH].items()}
        return cls(str(data[ENCODER_GRAPH]), str(data[FUSED_GRAPH]), heads)


@dataclass(frozen=True)
class Variant:
    precision: str
    files: VariantFiles
    device: str  # what it is built for: "any", "cpu" (int8) or "cuda" (fp16)
    settings: dict[str, Any] = field(default_factory=dict)  # optimisation / quantisation choices and timings
    validation: dict[str, Any] = field(default_factory=dict)  # figures against PyTorch, accuracy on real data
    session_config: dict[str, str] = field(default_factory=dict)  # ORT session config entries (SESSION_CONFIG_VALUES)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files.to_dict(), "device": self.device, "settings": self.settings,
                "validation": self.validation, "session_config": dict(self.session_config)}

    @classmethod
    def from_dict(cls, precision: str, data: dict[str, Any]) -> Variant:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}")
        # Absent from manifests written before variants carried one: no entry, ORT's defaults.
        config = check_session_config(precision, data.get("session_config", {}))
        return cls(precision, VariantFiles.from_dict(data["files"]), str(data["device"]),
                   dict(data.get("settings", {})), dict(data.get("validation", {})), config)


def check_session_config(precision: str, config: Any) -> dict[str, str]:
    """A variant's session config as the runtime may apply it; anything else is a ValueError naming the entry."""
    if not isinstance(config, dict):
        raise ValueError(f"variant {precision}: session_config must be an object, not {type(config).__name__}")
    for key, value in config.items():
        if key not in SESSION_CONFIG_VALUES:
            raise ValueError(f"variant {precision}: unknown session_config key {key!r}; valid: "
                             f"{', '.join(SESSION_CONFIG_VALUES)}")
        if not isinstance(value, str) or not SESSION_CONFIG_VALUES[key].fullmatch(value):
            raise ValueError(f"variant {precision}: session_config {key} is {value!r}, not a comma-separated list "
                             f"of names")
    return dict(config)


@dataclass(frozen=True)
class Manifest:
    tasks: tuple[TaskSpec, ...]
    max_length: int
    pooling: str
    hidden_size: int
    opset: int
    input_names: tuple[str, ...]
    pad_token_id: int
    encoder: GraphSpec
    fused: GraphSpec
    heads: dict[str, GraphSpec]
    variants: dict[str, Variant]
    backbone: str = ""
    model_type: str = ""
    tokenizer: str = TOKENIZER_FILE
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def labels(self, task: str) -> tuple[str, ...]:
        for spec in self.tasks:
            if spec.name == task:
                return spec.labels
        raise ConfigError(f"unknown task {task!r}; valid: {', '.join(self.task_names)}")

    def model_config(self) -> ModelConfig:
        """The tasks, pooling and lengths as a ModelConfig, so code written for checkpoints reads exports too."""
        return ModelConfig(tasks=self.tasks, backbone=self.backbone, pooling=self.pooling,
                           max_length=self.max_length, input_names=self.input_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": FORMAT_VERSION,
            "tasks": [{"name": t.name, "labels": list(t.labels)} for t in self.tasks],
            "max_length": self.max_length,
            "pooling": self.pooling,
            "hidden_size": self.hidden_size,
            "opset": self.opset,
            "input_names": list(self.input_names),
            "pad_token_id": self.pad_token_id,
            "tokenizer": self.tokenizer,
            "backbone": self.backbone,
            "model_type": self.model_type,
            "graphs": {
                ENCODER_GRAPH: self.encoder.to_dict(),
                FUSED_GRAPH: self.fused.to_dict(),
                HEAD_GRAPH: {task: spec.to_dict() for task, spec in self.heads.items()},
            },
            "variants": {name: v.to_dict() for name, v in self.variants.items()},
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        graphs = data["graphs"]
        return cls(
            tasks=tuple(TaskSpec(t["name"], tuple(t["labels"])) for t in data["tasks"]),
            max_length=int(data["max_length"]),
            pooling=str(data["pooling"]),
            hidden_size=int(data["hidden_size"]),
            opset=int(data["opset"]),
            input_names=tuple(data["input_names"]),
            pad_token_id=int(data["pad_token_id"]),
            encoder=GraphSpec.from_dict(graphs[ENCODER_GRAPH]),
            fused=GraphSpec.from_dict(graphs[FUSED_GRAPH]),
            heads={str(k): GraphSpec.from_dict(v) for k, v in graphs[HEAD_GRAPH].items()},
            variants={str(k): Variant.from_dict(str(k), v) for k, v in data["variants"].items()},
            backbone=str(data.get("backbone", "")),
            model_type=str(data.get("model_type", "")),
            tokenizer=str(data.get("tokenizer", TOKENIZER_FILE)),
            versions={str(k): str(v) for k, v in data.get("versions", {}).items()},
        )

    def write(self, folder: Path) -> None:
        write_json(Path(folder) / MANIFEST_FILE, self.to_dict())


def load_manifest(folder: Path) -> Manifest:
    """Read and check an export folder's manifest: format, version, consistency, and that every file it names
    is there. Every problem is one ManifestError naming the folder or file."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ManifestError(f"{folder}: no such export folder")
    if not path.is_file():
        raise ManifestError(f"{folder}: not an mtl-onnx export folder (no {MANIFEST_FILE}); run `mtl-onnx export`")
    data = _read(path)
    if data.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: not an mtl-onnx export manifest (format {data.get('format')!r})")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: manifest format version {version!r} is not supported (this mtl-onnx reads version "
            f"{FORMAT_VERSION}); export the checkpoint again with this version"
        )
    try:
        manifest = Manifest.from_dict(data)
        manifest.model_config()  # the same checks as a checkpoint's config: pooling, lengths, labels
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as err:
        detail = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise ManifestError(f"{path}: malformed manifest ({detail})") from None
    _check_consistent(path, manifest)
    _check_files(folder, manifest)
    return manifest


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: not an mtl-onnx export manifest (not a JSON object)")
    return data


def _check_consistent(path: Path, manifest: Manifest) -> None:
    if not manifest.variants:
        raise ManifestError(f"{path}: lists no variants")
    names = set(manifest.task_names)
    for precision, variant in manifest.variants.items():
        if set(variant.files.heads) != names:
            raise ManifestError(f"{path}: variant {precision} has heads for {sorted(variant.files.heads)}, "
                                f"but the tasks are {sorted(names)}")
    if set(manifest.heads) != names:
        raise ManifestError(f"{path}: graphs.heads lists {sorted(manifest.heads)}, but the tasks are {sorted(names)}")
    try:
        token_inputs(manifest.input_names)
    except ConfigError as err:
        raise ManifestError(f"{path}: {err}") from None
    for spec in manifest.tasks:
        outputs = [o for o in manifest.fused.outputs + manifest.heads[spec.name].outputs
                   if o.name == logits_name(spec.name)]
        if len(outputs) != 2 or any(o.shape[-1] != len(spec.labels) for o in outputs):
            shapes = [list(o.shape) for o in outputs]
            raise ManifestError(f"{path}: task {spec.name!r} has {len(spec.labels)} labels, but its graph outputs "
                                f"{logits_name(spec.name)} are {shapes or 'missing'}")
    if manifest.pad_token_id < 0 or manifest.hidden_size < 1:
        raise ManifestError(f"{path}: pad_token_id {manifest.pad_token_id} / hidden_size {manifest.hidden_size} "
                            f"are not valid")
    encoder_config = path.parent / ENCODER_CONFIG_FILE
    if encoder_config.is_file():
        try:
            limit = position_limit(json.loads(encoder_config.read_text(encoding="utf-8")))
        except (OSError, ValueError, AttributeError):
            return  # the runtime does not need this file; only the limit check is skipped
        if manifest.max_length > limit:
            raise ManifestError(f"{path}: max_length {manifest.max_length} is more than the encoder's "
                                f"{limit} positions")


def _check_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest names is inside the folder by name (no absolute path, no '..'), and is there. The
    file itself may be a symbolic link, as in a Hugging Face snapshot, whose files link into its blob store."""
    named = [manifest.tokenizer] + [f for v in manifest.variants.values() for f in v.files.all()]
    for name in dict.fromkeys(named):
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or "\\" in name or not relative.parts:
            raise ManifestError(f"{folder / MANIFEST_FILE}: names {name!r}, which is outside the export folder")
        target = folder / relative
        if not target.is_file():
            raise ManifestError(f"{folder / MANIFEST_FILE}: names {name}, which is missing from {folder}")
