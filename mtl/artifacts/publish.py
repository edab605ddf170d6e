"""Publishing a folder the tool writes (a checkpoint, an export, a Triton model): refuse to replace anything that is
not this tool's own artifact of the same kind, build the new one in a staging folder beside the target (the same
file system, so the final rename is atomic), and rename it into place only once it is complete. An older artifact
there is replaced only at that moment, so a run that fails leaves it as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mtl.errors import UserError

STAGING_SUFFIX = ".staging"
RETIRED_SUFFIX = ".retired"


def check_target(target: Path, kind: str, is_ours: Callable[[Path], bool], overwrite: bool,
                 error: type[UserError]) -> None:
    """`target` may be written: it is absent or empty, or it holds an artifact of this `kind` (as `is_ours` tells)
    and `overwrite` is set. Otherwise one `error` naming the folder and what would be valid."""
    if target.exists() and not target.is_dir():
        raise error(f"{target}: exists and is not a folder")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not is_ours(target):
        raise error(f"{target}: folder is not empty and holds no mtl-onnx {kind}; choose another output folder")
    if not overwrite:
        raise error(f"{target}: already holds an mtl-onnx {kind}; pass --overwrite to replace it")


def new_staging(target: Path, where: Path | None = None) -> Path:
    """A fresh, empty folder in `where` (default: beside `target`), with the permissions a plain `mkdir` would give
    (tempfile makes it 0700, which a container's non-root user could not read once it is published)."""
    where = target.parent if where is None else where
    where.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=where))
    staging.chmod(0o777 & ~_umask())
    return staging


def publish(staging: Path, target: Path, carry: tuple[str, ...] = ()) -> None:
    """Rename `staging` into place as `target`. The entries named in `carry` (a training run's `checkpoints/`) move
    from the old target into the new one first; whatever else the old target held is removed once the new one is
    in place."""
    if target.is_dir() and any(target.iterdir()):
        for name in carry:
            if (target / name).exists() and not (staging / name).exists():
                os.replace(target / name, staging / name)
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=RETIRED_SUFFIX, dir=staging.parent))
        os.replace(target, retired / target.name)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
        return
    if target.is_dir():
        target.rmdir()
    os.replace(staging, target)


@contextlib.contextmanager
def staged(target: Path, where: Path | None = None, carry: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a staging folder for `target`, publish it when the block ends normally, and remove it if the block
    raises (Ctrl-C included): the target is then exactly as it was."""
    staging = new_staging(target, where)
    try:
        yield staging
        publish(staging, target, carry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask
