"""The optional parts of the install (pyproject.toml's extras): the modules each one brings, whether they are
installed, and the one-line error naming the extra a command needs. Standard library only: the base install (the
runtime) must be able to say what it lacks.

Availability is asked of the import system without importing (`find_spec`): importing torch and transformers
takes seconds, and a command that cannot run should say so at once.
"""

from __future__ import annotations

import importlib.util

from mtl.errors import MissingDependencyError

# What a command imports from each extra; the first one missing is named in the error.
EXTRA_MODULES = {
    "train": ("torch", "transformers", "accelerate", "safetensors", "datasets", "pyarrow", "onnx", "onnxscript"),
    "ray": ("ray", "pyarrow"),
    "bench": ("matplotlib",),
    "triton": ("tritonclient", "onnx"),
}


def install_command(extra: str) -> str:
    return f"pip install 'mtl-onnx[{extra}]'"


def module_available(name: str) -> bool:
    """Whether a module is installed, without importing it (importing torch takes seconds)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module with no spec
        return False


def require_extra(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Nothing if `modules` (default: every module of `extra`) are installed; else one error saying that `what`
    needs the extra, which module is missing, and the command that installs it."""
    for module in modules or EXTRA_MODULES[extra]:
        if not module_available(module):
            raise MissingDependencyError(f"{what} needs the {extra} extra ({module} is not installed): "
                                         f"{install_command(extra)}")
