"""Publishing what the tool writes (a checkpoint, an export, a Triton model, a report): refuse to replace anything
that is not this tool's own artifact of the same kind, build the new one in a staging folder beside the target
(the same file system, so the final rename is atomic), and rename it into place only once it is complete. An older
artifact there is replaced only at that moment, so a run that fails leaves it as it was.

A staging folder holds an owner file with the process id that builds it; one whose process is gone was left by a
killed run and is removed by the next run that publishes to the same target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mtl.errors import OutputError, UserError

STAGING_SUFFIX = ".staging"
RETIRED_SUFFIX = ".retired"
PARTIAL_SUFFIX = ".partial"  # a training run's fixed-name staging folder, which --resume finds again
OWNER_FILE = ".mtl-onnx-owner"
# Errors that mean "this output cannot be written", whatever was being written when they struck.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def check_target(target: Path, kind: str, is_ours: Callable[[Path], bool], overwrite: bool,
                 error: type[UserError], overwrite_hint: str = "pass --overwrite to replace it") -> None:
    """`target` may be written: it is absent or empty, or it holds an artifact of this `kind` (as `is_ours` tells)
    and `overwrite` is set; and its folder can be written. Otherwise one error naming the folder and what would be
    valid. Called before any long work, so a mistake costs no waiting."""
    check_writable(target)
    if target.exists() and not target.is_dir():
        raise error(f"{target}: exists and is not a folder")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not is_ours(target):
        raise error(f"{target}: folder is not empty and holds no mtl-onnx {kind}; choose another output folder")
    if not overwrite:
        raise error(f"{target}: already holds an mtl-onnx {kind}; {overwrite_hint}")


def check_writable(target: Path) -> None:
    """One `OutputError` if `target` could not be created or replaced: a dangling symlink, a parent that is a
    file, a folder this process may not write in."""
    target = Path(target)
    if target.is_symlink() and not target.exists():
        raise OutputError(f"{target}: is a symbolic link to {os.readlink(target)}, which does not exist")
    parent = target.absolute().parent
    while not parent.exists():
        if parent.is_symlink():
            raise OutputError(f"{parent}: is a symbolic link to {os.readlink(parent)}, which does not exist")
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{target}: cannot be created, because {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: cannot be created, because {parent} is not writable")


def new_staging(target: Path, where: Path | None = None, name: str | None = None) -> Path:
    """A fresh, empty folder in `where` (default: beside `target`), owned by this process, with the permissions a
    plain `mkdir` would give (tempfile makes 0700, which a container's non-root user could not read once it is
    published). `name` gives it a fixed name (a training run's, so that --resume finds it); stale staging folders
    of the same target are removed first."""
    where = target.parent if where is None else where
    with _writing(where):
        where.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target, where)
        if name is None:
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=where))
        else:
            staging = where / name
            staging.mkdir()
        staging.chmod(0o777 & ~_umask())
        (staging / OWNER_FILE).write_text(str(os.getpid()), encoding="ascii")
    return staging


def remove_stale_staging(target: Path, where: Path | None = None) -> None:
    """Remove staging folders of `target` whose owning process is gone (left by a killed run)."""
    where = target.parent if where is None else where
    if not where.is_dir():
        return
    # Only names this module makes: ".NAME.<8 random>.staging" / ".retired" and ".NAME.partial".
    ours = re.compile(rf"\.{re.escape(target.name)}(\.[a-z0-9_]{{8}}({re.escape(STAGING_SUFFIX)}|"
                      rf"{re.escape(RETIRED_SUFFIX)})|{re.escape(PARTIAL_SUFFIX)})")
    for folder in where.iterdir():
        if (ours.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink()
                and staging_owner(folder) is None):
            shutil.rmtree(folder, ignore_errors=True)


def staging_owner(folder: Path) -> int | None:
    """The live process that owns a staging folder, or None when it is gone (or the folder is not ours)."""
    try:
        pid = int((folder / OWNER_FILE).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return pid
    return pid


def publish(staging: Path, target: Path) -> None:
    """Rename `staging` into place as `target`. An old target is moved aside first and removed only once the new
    one is in place; if a rename fails, the old one is put back as it was."""
    (staging / OWNER_FILE).unlink(missing_ok=True)
    with _writing(target):
        if not (target.is_dir() and any(target.iterdir())):
            if target.is_dir():
                target.rmdir()
            os.replace(staging, target)
            return
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=RETIRED_SUFFIX, dir=staging.parent))
        try:
            os.replace(target, retired / target.name)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(retired / target.name, target)
                raise
        finally:
            shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def staged(target: Path, where: Path | None = None) -> Iterator[Path]:
    """Yield a staging folder for `target`, publish it when the block ends normally, and remove it if the block
    raises (Ctrl-C included): the target is then exactly as it was."""
    staging = new_staging(target, where)
    try:
        with _writing(target):
            yield staging
        publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file beside it, renamed over it once written."""
    path = Path(path)
    check_writable(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file")
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open honours the umask
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _writing(target: Path) -> Iterator[None]:
    """A full disk, an exceeded quota or a read-only file system becomes one line naming the output."""
    try:
        yield
    except OSError as err:
        if isinstance(err, UserError) or err.errno not in WRITE_ERRNOS:
            raise
        raise OutputError(f"{target}: cannot be written ({os.strerror(err.errno)})") from None


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask
