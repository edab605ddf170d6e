"""The bench's records: what a worker sends its parent (a measurement, a cold start, what it loaded), and the
report the parent builds of them (rows, cold starts, accuracy, settings, environment).

`to_dict` gives the JSON form and `from_dict` reads it back: the JSON lines between worker and parent, and the
report file, whose keys readers of earlier reports (docs/bench.json) rely on: new fields are added beside them,
never in their place, and default to None when an earlier report is read. A row flattens its backend,
measurement and latency summary into one object, as reports always had it. No torch, no numpy.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mtl.bench.backends import Backend
from mtl.bench.environment import Environment
from mtl.errors import BenchError

REPORT_FORMAT = "mtl-onnx/bench"
REPORT_VERSION = 1
TEXT_ONLY = ("batch_shapes", "padded_tokens")  # keys a synthetic row's JSON leaves out


def _known(cls, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of dataclass `cls`: records share one flat JSON object."""
    return {f.name: data[f.name] for f in fields(cls) if f.name in data}


class _FlatRecord:
    """A dataclass whose JSON object is its own fields; reading ignores other keys (a worker event's "event")."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class EngineInfo(_FlatRecord):
    """What a worker's runner loaded: the execution provider, library versions, and for ONNX Runtime whether
    the export already holds ORT's fusions (None for PyTorch)."""

    provider: str
    versions: dict[str, str]
    offline_optimized: bool | None = None


@dataclass(frozen=True)
class Measurement(_FlatRecord):
    """One timed cell as the worker measured it: raw seconds per call, and what one call was."""

    workload: str  # "synthetic": one fixed-shape call; "text": one pass over the corpus
    mode: str
    batch_size: int
    sequence_length: int | None  # None for text: each batch has its own padded length
    items_per_call: int
    latencies_s: list[float]
    artifact_bytes: int
    batch_shapes: list[list[int]] | None = None  # text: (rows, padded length) of every batch of a pass
    padding: str | None = None  # text: "max_length" (every batch to the model's limit) or "dynamic" (to its longest)
    padded_tokens: int | None = None  # text: tokens a pass computes, padding included

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.workload == "synthetic":
            for key in TEXT_ONLY:
                del data[key]
        return data


@dataclass(frozen=True)
class LatencySummary:
    """Seconds per call (percentiles, mean, min, standard deviation) and items per second over the mean."""

    p50_s: float
    p90_s: float
    p99_s: float
    mean_s: float
    min_s: float
    std_s: float
    runs: int
    throughput_per_s: float


@dataclass
class Row:
    """A finished measurement: the backend and where it ran, the raw measurement, and the figures derived from it.
    `peak_rss_bytes` (its worker's peak) and the speed-ups are filled in once every row is in."""

    backend: Backend
    provider: str | None
    threads: int
    offline_optimized: bool | None
    versions: dict[str, str]
    measured: Measurement
    summary: LatencySummary
    flops_per_call: float
    gflops_per_s: float | None
    peak_rss_bytes: int | None = None
    speedup: float | None = None  # against PyTorch fp32 with per-task routing, same workload and shape
    speedup_same_mode: float | None = None  # against PyTorch fp32 in the same mode (and padding, where it has one)
    # Same work: against the fastest PyTorch row of this workload and shape that runs one encoder pass (real text:
    # dynamically padded). None for rows doing other work (per-task routing, padding to max length).
    engine_speedup: float | None = None
    engine_baseline: str | None = None  # that PyTorch row's `label`

    @property
    def label(self) -> str:
        """Backend and mode, and for real text how it padded: what tells two rows of one workload apart."""
        padding = f" {self.measured.padding}" if self.measured.padding else ""
        return f"{self.backend.name} {self.measured.mode}{padding}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.backend.to_dict(), "provider": self.provider, "threads": self.threads,
                "offline_optimized": self.offline_optimized, "versions": self.versions,
                **self.measured.to_dict(), **asdict(self.summary), "flops_per_call": self.flops_per_call,
                "gflops_per_s": self.gflops_per_s, "peak_rss_bytes": self.peak_rss_bytes, "speedup": self.speedup,
                "speedup_same_mode": self.speedup_same_mode, "engine_speedup": self.engine_speedup,
                "engine_baseline": self.engine_baseline}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        parts = {"backend": Backend.from_dict(data), "measured": Measurement.from_dict(data),
                 "summary": LatencySummary(**_known(LatencySummary, data))}
        return cls(**{**_known(cls, data), **parts})


@dataclass(frozen=True)
class ColdStartRun(_FlatRecord):
    """One fresh worker's start as it timed itself; the parent adds `seconds`, from spawn to its first line."""

    import_s: float
    load_s: float
    predict_s: float
    peak_rss_bytes: int | None
    modules: dict[str, bool]  # which heavy libraries the process imported
    seconds: float | None = None


@dataclass(frozen=True)
class ColdStart:
    """A backend's cold starts: every run's seconds, and the medians of each phase."""

    backend: Backend
    seconds: list[float]
    median_s: float
    import_s: float
    load_s: float
    predict_s: float
    peak_rss_bytes: int | None
    modules: dict[str, bool]

    @classmethod
    def of_runs(cls, backend: Backend, runs: list[ColdStartRun]) -> ColdStart:
        seconds = [run.seconds for run in runs]
        return cls(backend, seconds, statistics.median(seconds),
                   import_s=statistics.median(run.import_s for run in runs),
                   load_s=statistics.median(run.load_s for run in runs),
                   predict_s=statistics.median(run.predict_s for run in runs),
                   peak_rss_bytes=max((run.peak_rss_bytes or 0) for run in runs) or None, modules=runs[-1].modules)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["backend"]
        return {**self.backend.to_dict(), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColdStart:
        return cls(**{**_known(cls, data), "backend": Backend.from_dict(data)})


@dataclass(frozen=True)
class AccuracyRow:
    """A backend's accuracy on one task, and how it compares with the reference backend's predictions."""

    backend: str  # the backend's name
    task: str
    examples: int
    accuracy: float
    reference: str
    delta_points: float | None  # accuracy minus the reference's, in percentage points
    agreement: float | None  # share of examples where both predicted the same label


@dataclass(frozen=True)
class WorkerRecord:
    """A bench worker process: its backend's name, load time, peak RSS and which heavy libraries it imported."""

    backend: str
    load_s: float | None
    peak_rss_bytes: int | None
    modules: dict[str, bool]


@dataclass(frozen=True)
class TextSettings:
    source: str
    texts: int
    batch_size: int
    runs: int
    warmup_batches: int  # batches run untimed before a row's timed passes: its warm-up passes' batches
    warmup_passes: int | None = None  # whole passes over the corpus (earlier reports warmed up on one batch)


@dataclass(frozen=True)
class Settings:
    """How the bench measured: device, threads, process isolation, runs per cell, shapes and text workload."""

    device: str
    threads: int
    isolated: bool
    warmup: int
    runs: int
    min_runs: int
    max_cell_seconds: float
    shapes: list[list[int]]
    text: TextSettings | None
    validation: dict[str, dict[str, Any]]  # {task: {"file", "examples"}}
    speedup_baseline: str
    engine_speedup_baseline: str | None = None  # what a row's engine_speedup is measured against

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        text = TextSettings(**data["text"]) if data.get("text") else None
        return cls(**{**_known(cls, data), "text": text})


@dataclass
class Report:
    """A bench's outcome: every finished row, also when it was interrupted or a backend failed (`failed`: one
    line). `model` and `backends` describe what was measured; nothing reads them back but people."""

    created: str
    environment: Environment
    settings: Settings
    model: dict[str, Any]
    backends: list[dict[str, Any]]
    notes: list[str]
    rows: list[Row] = field(default_factory=list)
    cold_start: list[ColdStart] = field(default_factory=list)
    accuracy: list[AccuracyRow] = field(default_factory=list)
    workers: list[WorkerRecord] = field(default_factory=list)
    interrupted: bool = False
    failed: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT, "format_version": REPORT_VERSION, "created": self.created,
            "interrupted": self.interrupted, "failed": self.failed, "environment": self.environment.to_dict(),
            "settings": asdict(self.settings), "model": self.model, "backends": self.backends,
            "rows": [row.to_dict() for row in self.rows], "cold_start": [c.to_dict() for c in self.cold_start],
            "accuracy": [asdict(a) for a in self.accuracy], "workers": [asdict(w) for w in self.workers],
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if data.get("format") != REPORT_FORMAT:
            raise BenchError(f"not an mtl-onnx bench report (format {data.get('format')!r})")
        return cls(**{
            **_known(cls, data), "environment": Environment.from_dict(data["environment"]),
            "settings": Settings.from_dict(data["settings"]), "rows": [Row.from_dict(r) for r in data["rows"]],
            "cold_start": [ColdStart.from_dict(c) for c in data["cold_start"]],
            "accuracy": [AccuracyRow(**a) for a in data["accuracy"]],
            "workers": [WorkerRecord(**w) for w in data["workers"]],
        })
