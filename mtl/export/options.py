"""Export options and their checks; no torch, so the CLI reports a bad option before loading PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from mtl.artifacts.manifest import PRECISIONS
from mtl.config import Range, check_ranges
from mtl.errors import ConfigError

DEFAULT_OPSET = 17  # LayerNormalization is native from 17; ORT >= 1.14 runs it everywhere
OPSETS = range(14, 21)  # 14: the first with every op attention needs; 20: the TorchScript exporter's newest
INT8_TARGETS = ("auto", "avx512_vnni", "avx2", "arm64")
EXPORT_RANGES = {"max_int8_drop": Range(0, 100), "max_int8_f1_drop": Range(0, 100),
                 "threads": Range(1, 4096, whole=True, none_ok=True)}
TRITON_DEVICES = ("cpu", "gpu")  # Triton's instance kinds (KIND_CPU, KIND_GPU)


def parse_precisions(text: str) -> tuple[str, ...]:
    """'fp32,int8' -> ('fp32', 'int8'); fp32 is always included: it is the reference the others derive from."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PRECISIONS]
    if unknown:
        raise ConfigError(f"unknown precision {unknown[0]!r}; valid: {', '.join(PRECISIONS)}")
    return tuple(p for p in PRECISIONS if p == "fp32" or p in names)


@dataclass(frozen=True)
class ExportOptions:
    precisions: tuple[str, ...] = ("fp32",)
    optimize: bool = False
    opset: int = DEFAULT_OPSET
    validation_data: dict[str, Path] = field(default_factory=dict)  # task -> labelled JSONL/CSV
    text_field: str = "text"
    label_field: str = "label"
    max_int8_drop: float = 1.0  # accuracy points int8 may lose on any task before it is refused
    max_int8_f1_drop: float = 1.0  # and macro-F1 points, so that a collapsed minority class cannot pass
    force_int8: bool = False
    recorded_data: bool = True  # without validation_data, check on the checkpoint's own validation files
    int8_target: str = "auto"
    per_channel: bool = True
    threads: int | None = None
    overwrite: bool = False
    trust_remote_code: bool = False  # let the checkpoint's own Python run (--trust-remote-code)

    def checked(self) -> ExportOptions:
        precisions = parse_precisions(",".join(self.precisions))
        if self.opset not in OPSETS:
            raise ConfigError(f"opset {self.opset} is not supported; valid: {OPSETS.start}..{OPSETS.stop - 1}")
        check_ranges(self, EXPORT_RANGES)
        if self.int8_target not in INT8_TARGETS:
            raise ConfigError(f"unknown int8 target {self.int8_target!r}; valid: {', '.join(INT8_TARGETS)}")
        return replace(self, precisions=precisions)
