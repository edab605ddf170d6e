"""The export folder on disk: refusing to clobber what is not ours, staging beside the target and renaming into
place only once everything is validated, the tokenizer file the runtime reads, and library versions."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from mtl.errors import ExportError
from mtl.runtime.manifest import TOKENIZER_FILE, is_export_folder


def check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ExportError(f"{output}: exists and is not a folder")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not is_export_folder(output):
        raise ExportError(f"{output}: folder is not empty and holds no mtl-onnx export; choose another --output")
    if not overwrite:
        raise ExportError(f"{output}: already holds an export; pass --overwrite to replace it")


def staging_folder(output: Path) -> Path:
    """A fresh folder next to `output` (same file system, so the final rename is atomic)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".staging", dir=output.parent))


def publish(staging: Path, output: Path) -> None:
    """Move the validated export into place; an older export there is replaced only after this one is ready."""
    if output.is_dir() and any(output.iterdir()):
        retired = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
        os.replace(output, retired / "export")
        os.replace(staging, output)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        if output.is_dir():
            output.rmdir()
        os.replace(staging, output)


def write_tokenizer(tokenizer, folder: Path, max_length: int) -> int:
    """tokenizer.json with truncation to the model's max length and right padding set, plus the Hugging Face
    tokenizer files (so AutoTokenizer and Optimum read the folder too). Returns the padding id."""
    from tokenizers import Tokenizer

    check_tokenizer(tokenizer)
    tokenizer.model_max_length = max_length
    tokenizer.padding_side = "right"  # what the graphs were validated with
    tokenizer.save_pretrained(str(folder))
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy: the caller's stays as it was
    backend.enable_truncation(max_length)
    backend.enable_padding(direction="right", pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token,
                           pad_type_id=tokenizer.pad_token_type_id)
    backend.save(str(folder / TOKENIZER_FILE))
    return int(tokenizer.pad_token_id)


def check_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"the checkpoint's tokenizer ({type(tokenizer).__name__}) has no fast version "
                          f"(tokenizer.json), which the runtime needs")
    if tokenizer.pad_token_id is None:
        raise ExportError("the checkpoint's tokenizer has no padding token; batches could not be padded")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("mtl-onnx", "torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
