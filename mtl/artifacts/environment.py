"""Facts about this machine that artifacts and reports record: the cores this process may use (the default thread
count everywhere), its CPU's instruction-set flags, and the versions of the libraries that made or ran a model.
No torch: versions come from package metadata, without importing the packages."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# Every library whose version changes what an export contains or how fast it runs.
PACKAGES = ("mtl-onnx", "numpy", "onnxruntime", "onnxruntime-gpu", "tokenizers", "onnx", "torch", "transformers")


def usable_cores() -> int:
    """The cores this process may run on (taskset and container limits shrink this below the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's instruction-set flags (x86 `flags`, ARM `Features`); empty where /proc/cpuinfo is not readable."""
    try:
        text = cpuinfo.read_text(errors="ignore")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def library_versions() -> dict[str, str]:
    """Python's version and each installed package of `PACKAGES`; packages that are not installed are left out."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
