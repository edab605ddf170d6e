"""Which backends a bench runs: engine (PyTorch eager or ONNX Runtime) x precision x device, the execution modes
each supports, and the checks that fail before any work (unknown names, a missing model folder or dependency).

Parent side only: nothing heavy is imported here. What runs a backend lives in `engines` (inside the worker).

ONNX Runtime "fp32" and "fp32-opt" run the same fp32 files of the export: "fp32" with ORT's basic graph
optimisations only (the graph as exported: constant folding, no operator fusion), "fp32-opt" with all of them
(Attention, SkipLayerNorm, BiasGelu, ... fusions), as `mtl.runtime.Predictor` runs by default. The engine passes
`Backend.graph_optimization` to `Predictor.load`. An export made with `--optimize` has those fusions baked into the
file already; the manifest says so and the report shows it.

ONNX Runtime "int8-plain" is the int8 variant as exports built it before attention fusion (`mtl.bench.plain_int8`):
the export's fp32 graphs quantised as they are, with the export's int8 settings, run without a session config. The
bench builds it into a temporary folder before its worker starts, so that one run can set it beside the export's own
int8 (`ort-int8`); it is asked for by name, never a default, and has no cold start.

PyTorch "int8" is `torch.ao.quantization.quantize_dynamic` of the encoder's Linear layers (CPU only; heads float).
"st" is the peer (`peers`): sentence-transformers' ONNX backend on the checkpoint's encoder, fp32 and its dynamic
int8 export, with the checkpoint's heads in numpy; it needs the `peer` extra and runs one mode, "fused".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mtl.artifacts.manifest import DEVICES, VARIANT_DEVICE
from mtl.artifacts.manifest import PRECISIONS as VARIANTS
from mtl.errors import BenchError, ConfigError, MissingDependencyError
from mtl.extras import install_command, module_available

ENGINES = ("torch", "ort", "st")
MODES = ("per-task", "fused", "split")
WORKLOADS = ("synthetic", "text")  # fixed-shape batches of random token ids; passes over real texts
# Modes renamed since: the old name is refused with the new one, not silently taken.
RENAMED_MODES = {"seed": "per-task"}
PLAIN_INT8 = "int8-plain"
# PyTorch's precisions and the dtype each runs in ("int8": dynamic quantisation of the float32 Linear layers).
TORCH_DTYPES = {"fp32": "float32", "int8": "float32", "fp16": "float16", "bf16": "bfloat16"}
# ONNX Runtime's: the export's variants (`manifest.PRECISIONS`), and two the bench makes of a variant (the
# module docstring says how), each listed after the variant it reads.
ORT_DERIVED = {"fp32-opt": "fp32", PLAIN_INT8: "int8"}
ORT_PRECISIONS = tuple(p for v in VARIANTS for p in (v, *(d for d, base in ORT_DERIVED.items() if base == v)))
PRECISIONS = {"torch": tuple(TORCH_DTYPES), "ort": ORT_PRECISIONS, "st": ("fp32", "int8")}
ALL_PRECISIONS = tuple(dict.fromkeys((*ORT_PRECISIONS, *PRECISIONS["torch"], *PRECISIONS["st"])))
# Eager PyTorch has no separate "split": its all-heads forward already runs the encoder once, then each head. The
# peer encodes once and applies every head: "fused" is all it has.
ENGINE_MODES = {"torch": ("per-task", "fused"), "ort": MODES, "st": ("fused",)}


def _built_for(variant: str) -> tuple[str, ...]:
    device = VARIANT_DEVICE[variant]
    return DEVICES if device == "any" else (device,)


RUNS_ON = {
    ("torch", "fp32"): DEVICES, ("torch", "int8"): ("cpu",), ("torch", "fp16"): ("cuda",),
    ("torch", "bf16"): ("cuda",), ("st", "fp32"): ("cpu",), ("st", "int8"): ("cpu",),
    # an ORT backend runs where the variant it reads was built for
    **{("ort", p): _built_for(ORT_DERIVED.get(p, p)) for p in ORT_PRECISIONS},
}
DEFAULT_PRECISIONS = {
    ("torch", "cpu"): ("fp32", "int8"), ("torch", "cuda"): ("fp32", "fp16"),
    ("ort", "cpu"): ("fp32", "fp32-opt", "int8"), ("ort", "cuda"): ("fp32", "fp32-opt", "fp16"),
    ("st", "cpu"): ("fp32", "int8"), ("st", "cuda"): (),
}
# The folder each engine runs on: the peer reads the checkpoint's encoder and heads.
FOLDER_OF = {"torch": "checkpoint", "ort": "onnx", "st": "checkpoint"}
# Real text, per engine and mode: how a pass pads its batches. PyTorch "per-task" pads to max length, as the project
# this one started from did; PyTorch "fused" runs twice, padded to max length (routing alone changed) and dynamically
# padded and length-sorted (what a capable PyTorch user writes: `TorchPredictor`). Every other pass is dynamic.
TEXT_PADDINGS = {("torch", "per-task"): ("max_length",), ("torch", "fused"): ("max_length", "dynamic")}
# Cold start times `mtl-onnx predict`'s path; the peer's load exports its model, which its users do once.
COLD_START_ENGINES = ("torch", "ort")
INSTALL = {"torch": install_command("train"), "ort": "pip install onnxruntime", "ort-cuda": install_command("gpu"),
           "plot": install_command("bench"), "st": install_command("peer"), "onnx": "pip install onnx"}
# What the peer imports: its ONNX backend is Optimum's ORTModel over onnxruntime, under torch.
PEER_MODULES = ("torch", "transformers", "sentence_transformers", "optimum.onnxruntime", "onnxruntime")


def text_paddings(engine: str, mode: str) -> tuple[str, ...]:
    return TEXT_PADDINGS.get((engine, mode), ("dynamic",))


@dataclass(frozen=True)
class Backend:
    engine: str
    precision: str
    device: str

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.precision}"

    @property
    def variant(self) -> str | None:
        """The export's precision variant an ORT backend reads ("int8-plain": the int8 variant of the folder the
        bench builds from the export, whose int8 settings it takes)."""
        if self.engine != "ort":
            return None
        return ORT_DERIVED.get(self.precision, self.precision)

    @property
    def cold_start(self) -> bool:
        """Whether a cold start times it: not the peer (its load exports its model) nor int8-plain (not a variant
        any export holds: what a user starts is the export's own int8)."""
        return self.engine in COLD_START_ENGINES and self.precision != PLAIN_INT8

    @property
    def graph_optimization(self) -> str | None:
        if self.engine != "ort":
            return None
        return "basic" if self.precision == "fp32" else "all"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "backend": self.name, "graph_optimization": self.graph_optimization}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Backend:
        return cls(data["engine"], data["precision"], data["device"])


BACKEND_NAMES = tuple(f"{e}-{p}" for e in ENGINES for p in PRECISIONS[e])


def split_list(text: str | None, what: str, valid: tuple[str, ...]) -> tuple[str, ...] | None:
    """'a,b' -> ('a', 'b'), each checked against `valid`; None stays None (the default applies)."""
    if text is None:
        return None
    items = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    if not items:
        raise ConfigError(f"--{what} is empty; valid: {', '.join(valid)}")
    for item in items:
        if item not in valid:
            raise ConfigError(f"unknown {what} {item!r}; valid: {', '.join(valid)}")
    return items


def parse_backends(text: str | None) -> tuple[str, ...] | None:
    return split_list(text, "backend", ENGINES + BACKEND_NAMES)


def parse_precisions(text: str | None) -> tuple[str, ...] | None:
    return split_list(text, "precision", ALL_PRECISIONS)


def parse_modes(text: str | None) -> tuple[str, ...]:
    for old, new in RENAMED_MODES.items():
        if text is not None and old in (p.strip().lower() for p in text.split(",")):
            raise ConfigError(f"mode {old!r} is now called {new!r} (an encoder pass per task); valid: "
                              f"{', '.join(MODES)}")
    return split_list(text, "mode", MODES) or MODES


def parse_workloads(text: str | None) -> tuple[str, ...]:
    return split_list(text, "workload", WORKLOADS) or WORKLOADS


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    return device


def resolve_backends(items: tuple[str, ...] | None, precisions: tuple[str, ...] | None, device: str,
                     have: dict[str, bool], variants: tuple[str, ...]) -> tuple[list[Backend], list[str]]:
    """The backends to run, and notes on defaults that were left out. `items` are engines or exact backend
    names (None: every engine whose model folder was given); `have` says which engines have their folder;
    `variants` are the precisions the export holds. What the user named explicitly must run, or it is an error."""
    explicit = items is not None
    items = items if explicit else tuple(e for e in ENGINES if have[e])
    if not items:
        raise BenchError("nothing to benchmark: give a checkpoint (--checkpoint) and/or an export folder (--onnx)")
    chosen: list[Backend] = []
    notes: list[str] = []
    for item in items:
        engine, _, fixed = item.partition("-")
        if not have[engine]:
            folder = "a checkpoint folder (--checkpoint)" if FOLDER_OF[engine] == "checkpoint" else (
                "an export folder (--onnx)")
            raise BenchError(f"backend {item} needs {folder}")
        named = (fixed,) if fixed else precisions
        defaults = DEFAULT_PRECISIONS[(engine, device)]
        if not (named or defaults):
            if explicit:
                raise ConfigError(f"backend {item} runs on cpu only, not {device}; pass --device cpu")
            notes.append(f"{engine} backends skipped: they run on cpu only")
        for precision in named or defaults:
            backend = _checked(Backend(engine, precision, device), named is not None, variants, notes)
            if backend and backend not in chosen:
                chosen.append(backend)
    _check_precisions_used(precisions, items)
    if not chosen:
        raise BenchError(f"no backend left to run on {device}" + (f" ({'; '.join(notes)})" if notes else ""))
    return chosen, notes


def _checked(backend: Backend, named: bool, variants: tuple[str, ...], notes: list[str]) -> Backend | None:
    """The backend if it can run; None (with a note) for a default that cannot; an error for a named one."""
    engine, precision, device = backend.engine, backend.precision, backend.device
    if precision not in PRECISIONS[engine]:
        return None  # another engine's precision, in a cross product of --backend and --precision
    if device not in RUNS_ON[(engine, precision)]:
        if named:
            where = " or ".join(RUNS_ON[(engine, precision)])
            raise ConfigError(f"backend {backend.name} runs on {where} only, not {device}; pass --device {where}")
        return None
    if engine == "ort" and backend.variant not in variants:
        message = (f"precision {backend.variant} was not exported (present: {', '.join(variants)}); export it with "
                   f"`mtl-onnx export --precision fp32,{backend.variant}`")
        if named:
            raise ConfigError(f"backend {backend.name}: {message}")
        notes.append(f"{backend.name} skipped: {message}")
        return None
    return backend


def _check_precisions_used(precisions: tuple[str, ...] | None, items: tuple[str, ...]) -> None:
    engines = {item.partition("-")[0] for item in items}
    for precision in precisions or ():
        if not any(precision in PRECISIONS[e] for e in engines):
            valid = sorted({p for e in engines for p in PRECISIONS[e]}, key=ALL_PRECISIONS.index)
            raise ConfigError(f"precision {precision!r} is not available for {', '.join(sorted(engines))}; "
                              f"valid: {', '.join(valid)}")


def modes_for(backend: Backend, modes: tuple[str, ...], named: bool) -> tuple[str, ...]:
    """The requested modes this backend's engine has; asking only for ones it lacks is an error."""
    usable = tuple(m for m in modes if m in ENGINE_MODES[backend.engine])
    if not usable and named:
        raise ConfigError(f"backend {backend.name} has no {'/'.join(modes)} mode; valid: "
                          f"{', '.join(ENGINE_MODES[backend.engine])}")
    return usable


def peer_available() -> bool:
    return all(module_available(name) for name in PEER_MODULES)


def check_dependencies(backends: list[Backend], providers: list[str]) -> None:
    """One line naming the extra to install, for the first backend whose libraries are missing."""
    for backend in backends:
        if backend.engine == "st" and not peer_available():
            missing = next(name for name in PEER_MODULES if not module_available(name))
            raise MissingDependencyError(f"backend {backend.name} needs sentence-transformers' ONNX backend "
                                         f"({missing} is not installed): {INSTALL['st']}")
        if backend.engine == "torch" and not (module_available("torch") and module_available("transformers")):
            raise MissingDependencyError(f"backend {backend.name} needs PyTorch and transformers, which are not "
                                         f"installed: {INSTALL['torch']}")
        if backend.engine == "ort" and not module_available("onnxruntime"):
            raise MissingDependencyError(f"backend {backend.name} needs onnxruntime: {INSTALL['ort']}")
        if backend.precision == PLAIN_INT8 and not module_available("onnx"):
            raise MissingDependencyError(f"backend {backend.name} quantises the export's fp32 graphs, which needs "
                                         f"onnx: {INSTALL['onnx']}")
        if backend.engine == "ort" and backend.device == "cuda" and "CUDAExecutionProvider" not in providers:
            raise MissingDependencyError(
                f"backend {backend.name} on cuda needs ONNX Runtime's CUDA execution provider (available: "
                f"{', '.join(providers) or 'none'}): {INSTALL['ort-cuda']}")


def offline_fused(manifest) -> bool:
    """Whether the export baked ORT's transformer fusions into its fp32 files (`mtl-onnx export --optimize` keeps
    them only where they measured faster); int8 and fp16 are derived from those files, so they inherit them."""
    fp32 = manifest.variants.get("fp32")
    optimization = fp32.settings.get("optimization", {}) if fp32 else {}
    return any(isinstance(graph, dict) and graph.get("kept") for graph in optimization.values())
