"""The manifest of an export folder: the only contract between export (which writes it) and the runtime (which
reads it). No torch here.

    manifest.json   format, format_version, model (the checkpoint's ModelConfig as `ModelConfig.to_dict` writes
                    it: tasks and labels in order, backbone, pooling, dropout, max_length, and as input_names those
                    the graphs take), hidden_size, opset, pad_token_id, vocab_size and max_positions (the encoder's
                    embedding rows and position limit), model_type, tokenizer file, graphs (inputs/outputs with
                    dynamic axes), variants (per precision: its files, device, settings, validation record
                    (`mtl.artifacts.validation`) and the ONNX Runtime session config its graphs run with), files
                    (the size and sha256 of every file it names), library versions

Every value is read as the type and range it must have (`Manifest.from_dict`): a folder from someone else is data,
and a wrong value is one ManifestError at load, never a traceback or a silently wrong label at the first prediction.
Format 1 manifests (the model config's fields at the top level) still load. Those written before `vocab_size`,
`max_positions` and `files` existed too: those checks are then made from the folder's config.json where it has one,
and the files are loaded unchecked, with a warning.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from mtl.artifacts.digests import FileDigest, file_digest
from mtl.artifacts.encoder_config import position_limit
from mtl.artifacts.fields import check_type, need, number, objects, strings
from mtl.artifacts.io_spec import (
    EMBEDDING,
    ENCODER_GRAPH,
    FUSED_GRAPH,
    HEAD_GRAPH,
    GraphSpec,
    logits_name,
    token_inputs,
)
from mtl.artifacts.jsonfile import read_json, write_json
from mtl.artifacts.validation import CHECKED, FORCED, ValidationRecord
from mtl.config import CONFIG_FORMAT, ModelConfig, Range
from mtl.errors import ConfigError, ManifestError

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "mtl-onnx/export"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: the model config's fields at the top level, read into a ModelConfig all the same
TOKENIZER_FILE = "tokenizer.json"
ENCODER_CONFIG_FILE = "config.json"  # the encoder's Hugging Face config, for tools such as Optimum
# The one vocabulary of graph precisions: the variants an export may hold, and the device each is built for (its
# manifest entry's `device`): export, runtime, predict, Triton and the bench's ONNX Runtime backends all take these.
PRECISIONS = ("fp32", "int8", "fp16")
DEVICES = ("cpu", "cuda")
VARIANT_DEVICE = {"fp32": "any", "int8": "cpu", "fp16": "cuda"}

PRECISION_CHOICES = ("auto", *PRECISIONS)
EXECUTIONS = ("fused", "split")  # one graph for every head, or the encoder then the requested heads
# What "auto" picks, best first, per device: int8 is the CPU variant, fp16 the GPU one.
AUTO_PRECISION = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32")}
# The ONNX Runtime session config entries a variant may carry (its graphs were built to run with them) and the form
# of each value. The runtime applies them to every session of the variant; any other key is refused on load, not
# ignored, so that a variant never silently runs otherwise than it was built and validated.
SESSION_CONFIG_VALUES = {
    "optimization.disable_specified_optimizers": re.compile(r"[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*"),  # optimizer names
}
VARIANT_DEVICES = ("any", *DEVICES)
# The numbers a manifest holds besides the model config's, and what each may be: generous bounds that only catch
# damage and overflows.
MANIFEST_RANGES = {
    "hidden_size": Range(1, 1e6, whole=True),
    "opset": Range(7, 100, whole=True),  # ONNX opsets run from 1; this tool's graphs need far more than 7
    "pad_token_id": Range(0, 2**31 - 1, whole=True),
    "vocab_size": Range(0, 2**31 - 1, whole=True),  # 0: not recorded (older manifests)
    "max_positions": Range(0, 2**31 - 1, whole=True),  # 0: not recorded
}
RECORDED_SINCE_DIGESTS = ("vocab_size", "max_positions")  # absent from older manifests: 0, not recorded
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
        if choice == "int8" and manifest.variants["int8"].validation.status not in (CHECKED, FORCED):
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
    def from_dict(cls, data: dict[str, Any], where: str = "") -> VariantFiles:
        heads = need(data, HEAD_GRAPH, dict, where)
        for task, name in heads.items():
            check_type(name, str, f"{where}{HEAD_GRAPH}.{task}")
        return cls(need(data, ENCODER_GRAPH, str, where), need(data, FUSED_GRAPH, str, where), dict(heads))


@dataclass(frozen=True)
class Variant:
    precision: str
    files: VariantFiles
    device: str  # what it is built for: "any", "cpu" (int8) or "cuda" (fp16)
    settings: dict[str, Any] = field(default_factory=dict)  # optimisation / quantisation choices and timings
    validation: ValidationRecord = field(default_factory=ValidationRecord)  # what the export checked of it
    session_config: dict[str, str] = field(default_factory=dict)  # ORT session config entries (SESSION_CONFIG_VALUES)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files.to_dict(), "device": self.device, "settings": self.settings,
                "validation": self.validation.to_dict(), "session_config": dict(self.session_config)}

    @classmethod
    def from_dict(cls, precision: str, data: dict[str, Any]) -> Variant:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision[:40]!r}; valid: {', '.join(PRECISIONS)}")
        where = f"variants.{precision}."
        device = need(data, "device", str, where)
        if device not in VARIANT_DEVICES:
            raise ValueError(f"{where}device is {device[:40]!r}; valid: {', '.join(VARIANT_DEVICES)}")
        validation = ValidationRecord.from_dict(need(data, "validation", dict, where, {}), f"{where}validation.")
        # Absent from manifests written before variants carried one: no entry, ORT's defaults.
        config = check_session_config(precision, data.get("session_config", {}))
        return cls(precision, VariantFiles.from_dict(need(data, "files", dict, where), f"{where}files."), device,
                   dict(need(data, "settings", dict, where, {})), validation, config)


def check_session_config(precision: str, config: Any) -> dict[str, str]:
    """A variant's session config as the runtime may apply it; anything else is a ValueError naming the entry."""
    if not isinstance(config, dict):
        raise ValueError(f"variant {precision}: session_config must be an object, not {type(config).__name__}")
    for key, value in config.items():
        if key not in SESSION_CONFIG_VALUES:
            raise ValueError(f"variant {precision}: unknown session_config key {key[:60]!r}; valid: "
                             f"{', '.join(SESSION_CONFIG_VALUES)}")
        if not isinstance(value, str) or not SESSION_CONFIG_VALUES[key].fullmatch(value):
            raise ValueError(f"variant {precision}: session_config {key} is {repr(value)[:60]}, not a "
                             f"comma-separated list of names")
    return dict(config)


def with_file_digests(manifest: Manifest, folder: Path) -> Manifest:
    """The manifest with the size and sha256 of every file it names, as they are in `folder` now: what export
    records once the files are final, and any tool that rewrites a variant's files records again."""
    return replace(manifest, files={name: file_digest(Path(folder) / name) for name in manifest.named_files()})


@dataclass(frozen=True)
class Manifest:
    model: ModelConfig  # the checkpoint's, with the input names the graphs take (DeBERTa-v3 takes no token types)
    hidden_size: int
    opset: int
    pad_token_id: int
    encoder: GraphSpec
    fused: GraphSpec
    heads: dict[str, GraphSpec]
    variants: dict[str, Variant]
    model_type: str = ""
    tokenizer: str = TOKENIZER_FILE
    versions: dict[str, str] = field(default_factory=dict)
    vocab_size: int = 0  # the encoder graph's embedding rows (the largest token id + 1); 0: not recorded
    max_positions: int = 0  # the longest input, in tokens, the encoder's positions hold; 0: not recorded
    files: dict[str, FileDigest] = field(default_factory=dict)  # every named file; empty in older manifests

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.model.task_names

    def labels(self, task: str) -> tuple[str, ...]:
        return self.model.task(task).labels

    def named_files(self) -> list[str]:
        """Every file the manifest names, each once: the tokenizer, then each variant's graphs."""
        return list(dict.fromkeys([self.tokenizer, *(f for v in self.variants.values() for f in v.files.all())]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "hidden_size": self.hidden_size,
            "opset": self.opset,
            "pad_token_id": self.pad_token_id,
            "vocab_size": self.vocab_size,
            "max_positions": self.max_positions,
            "tokenizer": self.tokenizer,
            "model_type": self.model_type,
            "graphs": {
                ENCODER_GRAPH: self.encoder.to_dict(),
                FUSED_GRAPH: self.fused.to_dict(),
                HEAD_GRAPH: {task: spec.to_dict() for task, spec in self.heads.items()},
            },
            "variants": {name: v.to_dict() for name, v in self.variants.items()},
            "versions": dict(self.versions),
            "files": {name: digest.to_dict() for name, digest in self.files.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Each value as the type and range it must have; anything else is a ValueError (or KeyError) naming it."""
        graphs = need(data, "graphs", dict)
        numbers = {key: number(data, key, valid, **({"default": 0} if key in RECORDED_SINCE_DIGESTS else {}))
                   for key, valid in MANIFEST_RANGES.items()}
        versions = need(data, "versions", dict, default={})
        return cls(
            model=_model_config(data),
            encoder=GraphSpec.from_dict(need(graphs, ENCODER_GRAPH, dict, "graphs."), f"graphs.{ENCODER_GRAPH}."),
            fused=GraphSpec.from_dict(need(graphs, FUSED_GRAPH, dict, "graphs."), f"graphs.{FUSED_GRAPH}."),
            heads={k: GraphSpec.from_dict(v, f"graphs.{HEAD_GRAPH}.{k}.")
                   for k, v in objects(graphs, HEAD_GRAPH, "graphs.").items()},
            variants={k: Variant.from_dict(k, v) for k, v in objects(data, "variants").items()},
            model_type=need(data, "model_type", str, default=""),
            tokenizer=need(data, "tokenizer", str, default=TOKENIZER_FILE),
            versions={k: check_type(v, str, f"versions.{k}") for k, v in versions.items()},
            files={k: FileDigest.from_dict(v, f"files.{k}.") for k, v in objects(data, "files").items()}
            if "files" in data else {},
            **numbers,
        )

    def write(self, folder: Path) -> None:
        write_json(Path(folder) / MANIFEST_FILE, self.to_dict())


def _model_config(data: dict[str, Any]) -> ModelConfig:
    """The manifest's ModelConfig: its `model` object, or in format 1 the same fields at the top level (less the
    dropout, which no graph uses). Every field must be there, as the type it must be: a default (max_length 128)
    would silently be another model's. `ModelConfig` then checks the values."""
    if data.get("format_version") == 1:
        where, model = "", {"dropout": ModelConfig.dropout, **data, "format": CONFIG_FORMAT}
    else:
        where, model = "model.", need(data, "model", dict)
    tasks = need(model, "tasks", list, where)
    for i, task in enumerate(tasks):
        check_type(task, dict, f"{where}tasks[{i}]")
        need(task, "name", str, f"{where}tasks[{i}].")
        strings(task, "labels", f"{where}tasks[{i}].")
    strings(model, "input_names", where)
    missing = [key for key in ("backbone", "pooling", "dropout", "max_length") if key not in model]
    if missing:
        raise KeyError(f"{where}{missing[0]}")
    return ModelConfig.from_dict(model)


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
        raise ManifestError(f"{path}: not an mtl-onnx export manifest (format {str(data.get('format'))[:60]!r})")
    version = data.get("format_version")
    if version not in READABLE_VERSIONS or type(version) is not int:  # 1.0 and True equal 1
        raise ManifestError(
            f"{path}: manifest format version {str(version)[:20]} is not supported (this mtl-onnx reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); export the checkpoint again with this version"
        )
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:  # ConfigError (a ValueError): the model config's own checks
        detail = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise ManifestError(f"{path}: malformed manifest ({detail})") from None
    _check_consistent(path, manifest)
    _check_files(folder, manifest)
    return manifest


def _read(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except ValueError as err:  # JSONFileError: the file, and what about it is refused
        raise ManifestError(str(err)) from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot be read ({err.strerror or err})") from None
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
        graphs = [str(PurePosixPath(name)) for name in variant.files.all()]  # "a//b.onnx" is "a/b.onnx"
        twice = next((name for name in graphs if graphs.count(name) > 1), None)
        if twice is not None:  # one file cannot be two graphs of different inputs and outputs
            raise ManifestError(f"{path}: variant {precision} names {twice} for two of its graphs")
    if set(manifest.heads) != names:
        raise ManifestError(f"{path}: graphs.heads lists {sorted(manifest.heads)}, but the tasks are {sorted(names)}")
    try:
        inputs = token_inputs(manifest.model.input_names)
    except ConfigError as err:
        raise ManifestError(f"{path}: {err}") from None
    for graph, spec in ((ENCODER_GRAPH, manifest.encoder), (FUSED_GRAPH, manifest.fused)):
        if spec.inputs != inputs:  # what the runtime feeds both, whichever it opens later
            raise ManifestError(f"{path}: graphs.{graph} takes {spec.input_names}, not the encoder inputs "
                                f"{[t.name for t in inputs]} (int64, batch by sequence)")
    for spec in manifest.model.tasks:
        outputs = [o for o in manifest.fused.outputs + manifest.heads[spec.name].outputs
                   if o.name == logits_name(spec.name)]
        if len(outputs) != 2 or any(o.shape[1:] != (len(spec.labels),) for o in outputs):  # (batch, labels)
            shapes = [list(o.shape) for o in outputs]
            raise ManifestError(f"{path}: task {spec.name!r} has {len(spec.labels)} labels, but its graph outputs "
                                f"{logits_name(spec.name)} are {shapes or 'missing'}")
    # The sentence embedding, out of the encoder and into each head, is (batch, hidden_size): embed sizes its
    # output by hidden_size, and split execution feeds one graph's output to the other.
    embeddings = [t for t in manifest.encoder.outputs if t.name == EMBEDDING]
    embeddings += [t for head in manifest.heads.values() for t in head.inputs]
    if not embeddings[:1] or any(t.name != EMBEDDING or t.shape[1:] != (manifest.hidden_size,) for t in embeddings):
        raise ManifestError(f"{path}: the graphs' {EMBEDDING} tensors are {[list(t.shape) for t in embeddings]}, "
                            f"not (batch, hidden_size {manifest.hidden_size})")
    vocab_size, positions = encoder_limits(path.parent, manifest)
    if vocab_size and manifest.pad_token_id >= vocab_size:
        raise ManifestError(f"{path}: pad_token_id {manifest.pad_token_id} is past the encoder's vocabulary of "
                            f"{vocab_size} tokens")
    if positions and manifest.model.max_length > positions:
        raise ManifestError(f"{path}: max_length {manifest.model.max_length} is more than the encoder's "
                            f"{positions} positions")


def encoder_limits(folder: Path, manifest: Manifest) -> tuple[int, int]:
    """(vocabulary size, position limit) of the encoder graphs, 0 where unknown: as the manifest records them, or
    for a manifest older than those fields, from the folder's config.json (the encoder's Hugging Face config)."""
    if manifest.vocab_size and manifest.max_positions:
        return manifest.vocab_size, manifest.max_positions
    try:
        config = read_json(Path(folder) / ENCODER_CONFIG_FILE)
        vocab = config.get("vocab_size")
        vocab = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0 else 0
        return manifest.vocab_size or vocab, manifest.max_positions or max(position_limit(config), 0)
    except (OSError, ValueError, AttributeError, TypeError):
        return manifest.vocab_size, manifest.max_positions  # the runtime does not need the file: checks skipped


def _check_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest names is inside the folder by name (no absolute path, no '..'), and is there. The
    file itself may be a symbolic link, as in a Hugging Face snapshot, whose files link into its blob store."""
    for name in manifest.named_files():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or "\\" in name or not relative.parts:
            raise ManifestError(f"{folder / MANIFEST_FILE}: names {name!r}, which is outside the export folder")
        target = folder / relative
        if not target.is_file():
            raise ManifestError(f"{folder / MANIFEST_FILE}: names {name}, which is missing from {folder}")
        if manifest.files and name not in manifest.files:  # a manifest records every file's digest, or none
            raise ManifestError(f"{folder / MANIFEST_FILE}: records no size and sha256 for {name}, which it names; "
                                f"export again")
