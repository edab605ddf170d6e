"""Publishing what the tool writes (a checkpoint, an export, a Triton model, a report): refuse to replace anything
that is not this tool's own artifact of the same kind, build the new one in a staging folder beside the target
(the same file system, so the final rename is atomic), and rename it into place only once it is complete. An older
artifact there is replaced only at that moment, so a run that fails leaves it as it was.

A staging folder holds an owner file with the process id that builds it; one whose process is gone was left by a
killed run and is removed by the next run that publishes to the same target. A process that builds an artifact
first claims its target (`claimed`): a second process that would write the same target is refused, naming the first.

A report file (`--json`, `--markdown`, `--plot`) is written by `mtl.artifacts.reports`, with the same errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from mtl.errors import OutputError, UserError

STAGING_SUFFIX = ".staging"
RETIRED_SUFFIX = ".retired"
PARTIAL_SUFFIX = ".partial"  # a training run's fixed-name staging folder, which --resume finds again
OWNER_FILE = ".mtl-onnx-owner"
LOCK_SUFFIX = ".mtl-onnx-lock"  # ".NAME.mtl-onnx-lock" beside a target: the claim of the process writing it
# Errors that mean "this output cannot be written", whatever was being written when they struck.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def check_target(target: Path, kind: str, is_ours: Callable[[Path], bool], overwrite: bool,
                 error: type[UserError], overwrite_hint: str = "pass --overwrite to replace it",
                 renamed: bool = True, inputs: Iterable[Path | str | None] = ()) -> None:
    """`target` may be written: it is absent or empty, or it holds an artifact of this `kind` (as `is_ours` tells)
    and `overwrite` is set; and its folder can be written. Otherwise one error naming the folder and what would be
    valid. Called before any long work, so a mistake costs no waiting. A target that is `renamed` into place (not
    filled where it is) cannot be the current folder or one above it: no folder can be renamed over those; nor
    may it hold one of the command's `inputs` (a data file the user keeps in an old model's folder), which the new
    artifact would delete."""
    check_writable(target)
    parent = next((folder for folder in Path(target).absolute().parents if folder.exists()), Path("/"))
    try:  # the one sure test (root passes every access() check, and /proc or /sys refuse new names anyway)
        os.rmdir(tempfile.mkdtemp(prefix=".mtl-onnx-probe.", dir=parent))
    except OSError as err:
        raise OutputError(f"{target}: cannot be written, no folder can be created in {parent} "
                          f"({err.strerror})") from None
    here, real = Path.cwd().resolve(), Path(target).resolve()
    if renamed and real in (here, *here.parents):  # `--output .`, `--output ''`, `--output ..`
        raise error(f"{target}: is the current folder or one above it; the {kind} is published by renaming a new "
                    f"folder into place, so name a folder inside it instead (e.g. {Path(target) / 'onnx'})")
    for given in filter(None, inputs if renamed else ()):
        if Path(os.path.realpath(given)).is_relative_to(real):
            raise error(f"{given}: is an input of this command, and the new {kind} would replace {target} whole; "
                        f"choose another output folder")
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
        try:
            os.stat(target)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise OutputError(f"{target}: is a loop of symbolic links; name a folder or a file instead") from None
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
    with writing(where):
        where.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target, where)
        if name is None:
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=where))
        else:
            staging = where / name
            staging.mkdir()
        staging.chmod(0o777 & ~umask())
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
    with writing(target):
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
    raises (Ctrl-C included): the target is then exactly as it was. The target is claimed for the whole block."""
    with claimed(target):
        staging = new_staging(target, where)
        try:
            with writing(target):
                yield staging
            publish(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


_claims = threading.local()  # the lock files this thread holds, so that a claim inside a claim is free


@contextlib.contextmanager
def claimed(target: Path, where: Path | None = None) -> Iterator[None]:
    """Hold `target` for this process while the block runs: another process (or thread) that claims it meanwhile
    gets one `OutputError` naming this one. The claim is an exclusive `flock` on ".NAME.mtl-onnx-lock" beside the
    target (or in `where`, a folder above it, named by the path between), which the kernel releases when the
    process ends however it ends, so a killed run's claim is never stale; the file holds the owner's pid only to
    name it. Claiming again inside the block is free."""
    target = Path(target)
    if where is None:
        lock = target.absolute().parent / f".{target.name}{LOCK_SUFFIX}"
    else:
        lock = where / f".{'.'.join(target.resolve().relative_to(where.resolve()).parts)}{LOCK_SUFFIX}"
    held = _claims.__dict__.setdefault("locks", set())
    if str(lock) in held:
        yield
        return
    made = [folder for folder in (lock.parent, *lock.parent.parents) if not folder.exists()]
    handle = _take_lock(lock, target)
    held.add(str(lock))
    try:
        yield
    finally:
        held.discard(str(lock))
        with contextlib.suppress(OSError):
            lock.unlink()  # before the unlock: whoever opened it meanwhile sees it is gone and takes a new one
        os.close(handle)
        for folder in made:  # the folders made for the lock, if the block published nothing in them
            with contextlib.suppress(OSError):
                folder.rmdir()


def _take_lock(lock: Path, target: Path) -> int:
    with writing(lock):
        lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        try:
            handle = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666 & ~umask())
        except OSError as err:  # a symbolic link planted there (ELOOP), a read-only place
            raise OutputError(f"{lock}: the lock of {target} cannot be taken ({err.strerror})") from None
        try:
            owner = os.pread(handle, 32, 0).decode("ascii", "replace").strip()
            if not stat.S_ISREG(os.fstat(handle).st_mode) or not (owner.isdigit() or owner == ""):
                raise OutputError(f"{lock}: is not an mtl-onnx lock file, so {target} is not written; move it away")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(handle, 32, 0).decode("ascii", "replace").strip() or owner
                process = f"process {owner}" if owner.isdigit() else "a process"
                raise OutputError(f"{target}: another mtl-onnx run ({process}) is writing it; wait for it to "
                                  f"finish or stop it") from None
            if _same_file(handle, lock):
                os.ftruncate(handle, 0)
                os.pwrite(handle, str(os.getpid()).encode("ascii"), 0)
                return handle
        except BaseException:
            os.close(handle)
            raise
        os.close(handle)  # its holder removed it as this process opened it: take the new one
    raise OutputError(f"{lock}: the lock of {target} keeps changing; is another run starting and stopping?")


def _same_file(handle: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(handle)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)


@contextlib.contextmanager
def writing(target: Path, every_errno: bool = False) -> Iterator[None]:
    """A full disk, an exceeded quota or a read-only file system becomes one line naming the output; with
    `every_errno` (a report file, where any OSError is the place's, not the tool's: a closed pipe, EIO), any."""
    try:
        yield
    except OSError as err:
        if isinstance(err, UserError) or not (every_errno or err.errno in WRITE_ERRNOS):
            raise
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise OutputError(f"{target}: cannot be written ({reason})") from None


def umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask
