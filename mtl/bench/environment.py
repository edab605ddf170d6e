"""Where a benchmark ran: CPU model and the instruction sets that matter for int8/bf16, cores, GPU and driver,
library versions (`mtl.artifacts.environment`) and ONNX Runtime's execution providers. Imports no torch."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mtl.artifacts.environment import library_versions, usable_cores

# The flags that decide which kernels ONNX Runtime and PyTorch pick (VNNI: fast int8 dot products).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "amx_bf16", "amx_int8", "asimd", "asimddp", "sve")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    architecture: str
    flags: list[str]  # those of CPU_FLAGS it has
    logical_cores: int | None
    physical_cores: int | None
    usable_cores: int  # the ones this process may run on


@dataclass(frozen=True)
class GpuInfo:
    name: str
    driver: str
    memory: str  # as nvidia-smi prints it, e.g. "81559 MiB"
    compute_capability: str


@dataclass(frozen=True)
class Environment:
    platform: str
    load_average_at_start: list[float] | None
    cpu: CpuInfo
    threads: int
    gpus: list[GpuInfo]
    versions: dict[str, str]
    execution_providers: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        return cls(**{**data, "cpu": CpuInfo(**data["cpu"]), "gpus": [GpuInfo(**g) for g in data["gpus"]]})


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    model, flags, physical = platform.processor() or platform.machine(), set(), None
    try:
        text = cpuinfo.read_text(errors="ignore")
    except OSError:
        text = ""
    cores, sockets = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and value:
            model = value
        elif key in ("flags", "Features"):  # x86, ARM
            flags.update(value.split())
        elif key == "physical id":
            sockets.add(value)
        elif key == "cpu cores" and value.isdigit():
            cores = int(value)  # per socket
    if cores:
        physical = cores * max(1, len(sockets))
    physical = _psutil_physical_cores() or physical
    return CpuInfo(model=model, architecture=platform.machine(), flags=[f for f in CPU_FLAGS if f in flags],
                   logical_cores=os.cpu_count(), physical_cores=physical, usable_cores=usable_cores())


def _psutil_physical_cores() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.cpu_count(logical=False)


def gpu_info() -> list[GpuInfo]:
    """One entry per NVIDIA GPU, from nvidia-smi; empty where there is none (or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = "--query-gpu=name,driver_version,memory.total,compute_cap"
    try:
        out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append(GpuInfo(parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return gpus


def ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return None


def busy_note(load: list[float] | None, cores: int) -> str | None:
    """A warning when other work was already running: timings taken on a busy machine mean little (with two
    threads on two busy cores, OpenMP barriers in PyTorch can take 100x longer)."""
    if load and load[0] >= max(0.5, 0.25 * cores):
        return (f"the machine was busy when the bench started (load average {load[0]:.2f} on {cores} usable "
                f"cores): latencies are not representative; rerun on a quiet machine")
    return None


def collect_environment(threads: int) -> Environment:
    return Environment(platform=platform.platform(), load_average_at_start=load_average(), cpu=cpu_info(),
                       threads=threads, gpus=gpu_info(), versions=library_versions(),
                       execution_providers=ort_providers())
