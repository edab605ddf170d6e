"""A bench's options, and the plan made of them: every input checked (names, limits, folders, files, dependencies)
before the first measurement, so that a mistake costs one line and no waiting. No torch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtl.artifacts.checkpoint import (
    ENCODER_CONFIG_DIR,
    MODEL_CONFIG_FILE,
    WEIGHTS_FILE,
    check_checkpoint,
    read_model_config,
)
from mtl.artifacts.environment import usable_cores
from mtl.artifacts.jsonfile import read_json
from mtl.bench.backends import (
    INSTALL,
    PLAIN_INT8,
    Backend,
    check_dependencies,
    check_device,
    modes_for,
    offline_fused,
    parse_backends,
    parse_modes,
    parse_precisions,
    parse_workloads,
    peer_available,
    resolve_backends,
    text_paddings,
)
from mtl.bench.environment import ort_providers
from mtl.bench.stats import EncoderDims
from mtl.bench.workloads import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_SEQUENCE_LENGTHS,
    Shape,
    check_batch_size,
    demo_validation_files,
    load_corpus,
    load_validation,
    sweep_shapes,
)
from mtl.config import ModelConfig, Range
from mtl.errors import BenchError, CheckpointError, ConfigError, MissingDependencyError
from mtl.extras import module_available

COLD_START_TEXT = "Stocks rallied after the central bank cut interest rates."


@dataclass(frozen=True)
class BenchOptions:
    """What to measure. Lists of names are comma-separated strings, as typed on the command line."""

    checkpoint: Path | None = None
    onnx: Path | None = None
    backends: str | None = None  # "torch", "ort", or exact names like "ort-int8"; None: all that can run
    precisions: str | None = None  # fp32, fp32-opt, int8, int8-plain, fp16, bf16; None: the device's defaults
    modes: str = "per-task,fused,split"
    device: str = "cpu"
    threads: int | None = None  # None: every core this process may use
    workloads: str = "synthetic,text"
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    sequence_lengths: tuple[int, ...] = DEFAULT_SEQUENCE_LENGTHS
    # Sized so that the default sweep over MiniLM with four backends (PyTorch fp32, three ORT) and three modes took
    # about 7 minutes on 2 cores; PyTorch int8 and the peer's two backends, defaults since, add to that (not measured).
    warmup: int = 2
    runs: int = 10
    max_cell_seconds: float = 4.0
    corpus: Path | None = None  # None: the bundled demo texts
    text_field: str = "text"
    corpus_limit: int | None = 256
    text_batch_size: int = 32
    text_runs: int = 3
    validation_data: dict[str, Path] | str = field(default_factory=dict)  # {task: file}, or "demo"
    validation_limit: int | None = 500
    label_field: str = "label"
    cold_start: bool = True
    cold_runs: int = 1
    plot: Path | None = None  # only checked here (matplotlib installed?); drawing is report.write_plot's job
    isolate: bool = True  # False: run every backend in this process (tests, debugging); figures not clean


@dataclass
class BenchPlan:
    options: BenchOptions
    backends: list[Backend]
    modes: dict[str, tuple[str, ...]]
    shapes: list[Shape]
    text: dict[str, Any] | None
    validation: dict[str, dict]
    config: ModelConfig
    dims: EncoderDims
    threads: int
    notes: list[str]

    def total_units(self) -> int:
        """Progress units: one per measurement cell (a text pass each), accuracy task and cold start."""
        cells = len(self.validation) * len(self.backends)
        for backend in self.backends:
            for mode in self.modes[backend.name]:
                cells += len(self.shapes) + (len(text_paddings(backend.engine, mode)) if self.text else 0)
        return cells + len(self.cold_start_backends) * self.options.cold_runs

    @property
    def cold_start_backends(self) -> list[Backend]:
        if not (self.options.cold_start and self.options.isolate):
            return []
        return [b for b in self.backends if b.cold_start]


def classify_model_folder(path: Path) -> str:
    """'onnx' for an export folder, 'checkpoint' for a training checkpoint; a one-line error otherwise."""
    from mtl.artifacts.manifest import is_export_folder

    path = Path(path)
    if not path.is_dir():
        raise BenchError(f"{path}: no such folder")
    if is_export_folder(path):
        return "onnx"
    if (path / MODEL_CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return "checkpoint"
    raise BenchError(f"{path}: neither an mtl-onnx checkpoint nor an export folder")


def assign_model_folder(model: Path | None, checkpoint: Path | None, onnx: Path | None) -> tuple:
    """(checkpoint, onnx) once the positional MODEL is told apart; giving the same kind twice is an error."""
    if model is None:
        return checkpoint, onnx
    kind = classify_model_folder(model)
    given = checkpoint if kind == "checkpoint" else onnx
    if given is not None and Path(given).resolve() != Path(model).resolve():
        flag = "--checkpoint" if kind == "checkpoint" else "--onnx"
        what = "a checkpoint" if kind == "checkpoint" else "an export folder"
        raise BenchError(f"{model} is {what} and {flag} names another one; give one of them")
    return (Path(model), onnx) if kind == "checkpoint" else (checkpoint, Path(model))


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"bad {flag} {text!r}: expected whole numbers separated by commas") from None
    if not values:
        raise ConfigError(f"{flag} is empty")
    return values


def plan_bench(options: BenchOptions) -> BenchPlan:
    _check_numbers(options)
    workloads = parse_workloads(options.workloads)
    device = check_device(options.device)
    items, modes = parse_backends(options.backends), parse_modes(options.modes)
    precisions = parse_precisions(options.precisions)
    config, dims, variants, notes = _model(options)
    checkpoint = options.checkpoint is not None
    have = {"torch": checkpoint, "ort": options.onnx is not None, "st": checkpoint}
    if items is None:
        _drop_uninstalled(have, notes)
    backends, skipped = resolve_backends(items, precisions, device, have, variants)
    notes += skipped
    if any(b.engine == "st" for b in backends):
        notes.append("the peer (st-*) exports, and for int8 quantises, the encoder when its worker loads: its peak "
                     "RSS includes that, and it has no cold start")
    if any(b.precision == PLAIN_INT8 for b in backends):
        notes.append(f"ort-{PLAIN_INT8} is the int8 variant as exports built it before attention fusion: the export's "
                     f"fp32 graphs quantised with its int8 settings, run without its session config; the bench builds "
                     f"it before its worker starts (no cold start row)")
    check_dependencies(backends, ort_providers() if any(b.engine == "ort" for b in backends) else [])
    named_engines = {i.partition("-")[0] for i in items or ()}
    backend_modes = {b.name: modes_for(b, modes, b.engine in named_engines) for b in backends}
    backends = [b for b in backends if backend_modes[b.name]]
    if not backends:
        raise ConfigError(f"no backend has the mode(s) {', '.join(modes)}")
    shapes = []
    if "synthetic" in workloads:
        shapes = sweep_shapes(options.batch_sizes, options.sequence_lengths, dims.max_positions)
    text = _text_workload(options) if "text" in workloads else None
    validation = _validation(options, config)
    if options.plot is not None and not module_available("matplotlib"):
        raise MissingDependencyError(f"--plot needs matplotlib, which is not installed: {INSTALL['plot']}")
    longer = [s.sequence for s in shapes if s.sequence > config.max_length]
    if longer:
        notes.append(f"sequence lengths {', '.join(map(str, sorted(set(longer))))} are past the model's max_length "
                     f"({config.max_length}): the graphs run them, but real texts are cut to {config.max_length}")
    threads = options.threads or usable_cores()
    if threads > usable_cores():
        notes.append(f"{threads} threads on {usable_cores()} usable cores: the backends are oversubscribed")
    return BenchPlan(options, backends, backend_modes, shapes, text, validation, config, dims, threads, notes)


def _drop_uninstalled(have: dict[str, bool], notes: list[str]) -> None:
    """Defaults, not requests: run what can run, and say what was left out."""
    if have["torch"] and not (module_available("torch") and module_available("transformers")):
        have["torch"] = have["st"] = False
        notes.append(f"PyTorch backends and the peer skipped: torch is not installed ({INSTALL['torch']})")
    if have["st"] and not peer_available():
        have["st"] = False
        notes.append(f"the peer (sentence-transformers' ONNX backend, st-*) skipped: not installed ({INSTALL['st']})")


def _check_numbers(options: BenchOptions) -> None:
    checks = [
        ("--warmup", options.warmup, 0), ("--runs", options.runs, 1), ("--text-runs", options.text_runs, 1),
        ("--cold-runs", options.cold_runs, 1), ("--threads", options.threads, 1),
        ("--corpus-limit", options.corpus_limit, 1), ("--validation-limit", options.validation_limit, 1),
    ]
    for flag, value, least in checks:
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    Range(0, 1e6, above=True).check("--max-cell-seconds", options.max_cell_seconds)  # NaN included
    check_batch_size(options.text_batch_size, "text batch size")


def _model(options: BenchOptions) -> tuple[ModelConfig, EncoderDims, tuple[str, ...], list[str]]:
    """Tasks and labels, the encoder's dimensions, the export's precision variants, and notes on the export."""
    if options.checkpoint is None and options.onnx is None:
        raise BenchError("nothing to benchmark: give a checkpoint (--checkpoint) and/or an export folder (--onnx)")
    config = manifest = None
    if options.checkpoint is not None:
        folder = check_checkpoint(Path(options.checkpoint))
        try:
            config = read_model_config(folder)
            dims = EncoderDims.from_config(read_json(folder / ENCODER_CONFIG_DIR / "config.json"))
        except (KeyError, TypeError, ValueError) as err:  # ConfigError is a ValueError too: keep its message
            detail = f"missing key {err}" if isinstance(err, KeyError) else str(err)
            raise CheckpointError(f"{folder}: unreadable model or encoder config ({detail})") from None
    if options.onnx is not None:
        from mtl.artifacts.manifest import load_manifest

        manifest = load_manifest(Path(options.onnx))
        if config is not None and _tasks(config) != _tasks(manifest.model):
            raise BenchError(f"{options.checkpoint} and {options.onnx} are not the same model: their tasks or "
                             f"labels differ")
        config = config or manifest.model
        if options.checkpoint is None:
            dims = EncoderDims.from_config(_export_encoder_config(Path(options.onnx)))
    variants = tuple(manifest.variants) if manifest else ()
    notes = []
    if manifest and offline_fused(manifest):
        notes.append("the export was made with --optimize: its fp32 files already hold ONNX Runtime's fusions, so "
                     "ort-fp32 and ort-fp32-opt differ only by the session's own optimisations")
    return config, dims, variants, notes



def _tasks(config: ModelConfig) -> list[tuple[str, tuple[str, ...]]]:
    return [(t.name, t.labels) for t in config.tasks]


def _export_encoder_config(folder: Path) -> dict[str, Any]:
    """The encoder's Hugging Face config.json, which the export writes beside the graphs."""
    path = folder / "config.json"
    try:
        return read_json(path)
    except (OSError, ValueError):  # ValueError: JSONFileError, the one JSON reader's refusal
        raise BenchError(f"{path}: missing or unreadable; FLOPs and input limits need the encoder's config "
                         f"(pass --checkpoint too)") from None


def _text_workload(options: BenchOptions) -> dict[str, Any]:
    texts, source = load_corpus(options.corpus, options.text_field, options.corpus_limit)
    # Warm-up is a whole pass (every batch shape the timed passes meet), and one is enough: a pass of PyTorch
    # padded to max length can take many seconds.
    return {"texts": texts, "source": source, "batch_size": options.text_batch_size, "runs": options.text_runs,
            "warmup": min(options.warmup, 1)}


def _validation(options: BenchOptions, config: ModelConfig) -> dict[str, dict]:
    files = options.validation_data
    if files == "demo":
        files = demo_validation_files(config)
    if not files:
        return {}
    return load_validation(dict(files), config, options.validation_limit, options.text_field, options.label_field)
