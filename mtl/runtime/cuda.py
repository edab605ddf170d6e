"""ONNX Runtime's CUDA provider and the CUDA libraries it needs, which in the gpu image come in pip wheels (torch's
`nvidia-*` dependencies, CUDA 13) that are not on the dynamic loader's path.

`load_cuda_libraries` loads them by their full paths (`onnxruntime.preload_dlls`) before the first CUDA session;
`cuda_unavailable_reason` names what is missing when a session did not get the CUDA provider anyway (ONNX Runtime
then runs on CPU without an error: onnxruntime#23372); `python -m mtl.runtime.cuda` is the image build's check,
which needs no GPU, that every library the provider links against resolves.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort

CUDA_PROVIDER = "CUDAExecutionProvider"
PROVIDER_LIBRARY = "libonnxruntime_providers_cuda.so"
# The NVIDIA driver's library. Never part of an image: the NVIDIA Container Toolkit mounts the host's at
# `docker run --gpus ...`, so the build's check sets it aside and the runtime names it when it is absent.
DRIVER_LIBRARY = "libcuda.so.1"
# Not linked but opened by the provider when it starts (cuDNN handles on every CUDA stream).
OPENED_AT_START = ("libcudnn.so.9",)


def has_cuda_provider() -> bool:
    """Whether this onnxruntime is a CUDA build; not whether its provider can start (see `cuda_unavailable_reason`)."""
    return CUDA_PROVIDER in ort.get_available_providers()


@functools.cache
def load_cuda_libraries() -> tuple[str, ...]:
    """Load the CUDA and cuDNN libraries the CUDA provider needs, once per process, from the nvidia-* wheels
    (else from the loader's default path). Returns what ONNX Runtime said about those it could not load."""
    if not has_cuda_provider() or not hasattr(ort, "preload_dlls"):
        return ()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # it prints, and stdout carries predict's JSON lines
        try:
            ort.preload_dlls()
        except (OSError, RuntimeError) as err:
            print(f"onnxruntime.preload_dlls: {err}")
    return tuple(line.strip() for line in printed.getvalue().splitlines() if line.strip().startswith(
        ("Failed to load", "onnxruntime.preload_dlls")))


def cuda_unavailable_reason() -> str:
    """Why a CUDA session ended up without the CUDA provider, as far as can be told: what did not load."""
    if not has_cuda_provider():
        return (f"ONNX Runtime has no CUDA execution provider here (onnxruntime {ort.__version__}, available: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu (the gpu extra of mtl-onnx)")
    missing = [Path(line.split(":")[0].removeprefix("Failed to load ").strip()).name for line in load_cuda_libraries()]
    if not _loads(DRIVER_LIBRARY):
        missing.insert(0, f"{DRIVER_LIBRARY} (the NVIDIA driver; in a container: docker run --gpus all)")
    if missing:
        return f"ONNX Runtime's CUDA provider did not start: missing {', '.join(missing)}"
    return "ONNX Runtime's CUDA provider did not start (no CUDA device visible, or a driver older than its CUDA)"


def _loads(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def provider_library() -> Path:
    return Path(ort.__file__).parent / "capi" / PROVIDER_LIBRARY


def unresolved_libraries() -> list[str]:
    """The libraries the CUDA provider needs that would not resolve once `load_cuda_libraries` ran, the driver's
    set aside: what the provider library links against, what it opens when it starts (cuDNN), and what cuDNN's
    own parts (opened later, per operation) link against. Runs without a GPU.

    Why ldd and not dlopen: the provider links against the driver's libcuda.so.1, which no image holds, so
    loading it always fails at build time; ldd resolves every dependency (and theirs) on its own line, so the
    driver's alone can be excused. Its library path is the folders `load_cuda_libraries` loaded from: the files
    the runtime preloads are the ones checked."""
    load_cuda_libraries()
    loaded = [Path(path) for path in _loaded_library_paths()]
    unopened = [name for name in OPENED_AT_START if not any(path.name == name for path in loaded)]
    targets = [provider_library(), *(library for path in loaded if path.name in OPENED_AT_START
                                     for library in sorted(path.parent.glob(path.name.replace(".so.", "_*.so."))))]
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(sorted({str(path.parent) for path in loaded}))}
    unresolved: dict[str, None] = {}
    for target in targets:
        listing = subprocess.run(["ldd", str(target)], capture_output=True, text=True, env=env, check=True)
        for line in listing.stdout.splitlines():
            name = line.split("=>")[0].strip()
            if "not found" in line and name != DRIVER_LIBRARY:
                unresolved[f"{name} (for {target.name})"] = None
    return [*unresolved, *unopened]


def _loaded_library_paths() -> list[str]:
    """The shared libraries this process has mapped (Linux)."""
    with open("/proc/self/maps", encoding="utf-8") as maps:
        paths = {line.split()[-1] for line in maps if ".so" in line and line.split()[-1].startswith("/")}
    return sorted(paths)


def main() -> int:
    """The image build's check: exit 1, naming what is missing, unless ONNX Runtime's CUDA provider library and
    every library it needs are here and of the CUDA major it was built for."""
    if not has_cuda_provider() or not provider_library().is_file():
        print(f"error: onnxruntime {ort.__version__} has no CUDA provider here ({provider_library()})", file=sys.stderr)
        return 1
    unresolved = unresolved_libraries()
    if unresolved:
        print(f"error: {PROVIDER_LIBRARY} cannot resolve: {'; '.join(unresolved)}", file=sys.stderr)
        return 1
    print(f"{PROVIDER_LIBRARY} (onnxruntime {ort.__version__}): every library resolves ({DRIVER_LIBRARY} comes from "
          f"the host's NVIDIA driver at run time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
