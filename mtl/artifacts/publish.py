"""Publishing what the tool writes (a checkpoint, an export, a Triton model, a report): refuse to replace anything
that is not this tool's own artifact of the same kind, build the new one in a staging folder beside the target
(the same file system, so the final rename is atomic), and rename it into place only once it is complete. An older
artifact there is replaced only at that moment, so a run that fails leaves it as it was.

A staging folder holds an owner file with the process id that builds it; one whose process is gone was left by a
killed run and is removed by the next run that publishes to the same target. A process that builds an artifact
first claims its target (`claimed`): a second process that would write the same target is refused, naming the first.

A report file (`--json`, `--markdown`, `--plot`) goes where the user pointed, whatever is at the path
(`write_output_file`, checked before the work by `check_output_file`): a regular file, or a path where nothing is
yet, is replaced whole by renaming a temporary file over it; a symbolic link is followed and its target replaced
so (the link stays, the file it names gets the report); a FIFO, a character device (`/dev/null`) or an open file
descriptor (`/dev/stdout`, `/dev/fd/N`) is written through, never replaced. A link's target is replaced by rename
too, not rewritten in place: the link is only how the user says where, and the file behind it deserves what any
report file gets (a reader never sees half of it, a full disk leaves the old one); its permissions are kept.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    raises (Ctrl-C included): the target is then exactly as it was. The target is claimed for the whole block."""
    with claimed(target):
        staging = new_staging(target, where)
        try:
            with _writing(target):
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
    with _writing(lock):
        lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        try:
            handle = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666 & ~_umask())
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


# The /proc folder of a process's open file descriptors; /dev/fd, /dev/stdout and /proc/self/fd lead there.
_DESCRIPTOR_FOLDER = re.compile(r"/proc/(\d+)(?:/task/\d+)?/fd")


@dataclass(frozen=True)
class _Destination:
    """Where a report goes: `path` is replaced whole (a regular file or nothing yet, links followed), or written
    through (a FIFO, a character device, an open descriptor; `descriptor` when it is this process's own)."""

    path: Path
    through: bool = False
    descriptor: int | None = None


def check_output_file(path: Path) -> None:
    """One `OutputError` if a report could not be written to `path`, for the CLI to call before the work: a
    folder, a block device or socket, a closed descriptor, a dangling link, a read-only file, or a folder where no
    file can be created (a read-only file system, /proc, /sys). A full disk can only show when it is written."""
    destination = _destination(Path(path))
    if destination.through:
        if not os.access(path, os.W_OK):
            raise OutputError(f"{path}: is not writable")
        return
    real = destination.path
    if real.exists() and not os.access(real, os.W_OK):
        raise OutputError(f"{path}: is read-only")
    folder = real.parent
    while not folder.exists():
        folder = folder.parent
    try:  # the one sure test that a temporary file can be made beside it (root passes every access() check)
        handle, probe = tempfile.mkstemp(prefix=".mtl-onnx-probe.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{path}: cannot be written, no file can be created in {folder} ({err.strerror})") from None


def write_output_file(path: Path, data: bytes | str) -> None:
    """Write a report (bytes, or text as UTF-8) where the user pointed, as the module says: a file is replaced
    whole or not at all, a FIFO or device is written through. Any failure is one `OutputError` naming `path`."""
    path = Path(path)
    data = data.encode("utf-8") if isinstance(data, str) else data
    destination = _destination(path)
    with _writing(path, every_errno=True):
        if destination.through:
            _write_through(destination, data)
        else:
            _replace_file(destination.path, data)


def _destination(path: Path) -> _Destination:
    descriptor = _descriptor_entry(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        if descriptor is not None:
            raise OutputError(f"{path}: names file descriptor {descriptor.name}, which is not open") from None
        check_writable(path)  # a dangling link, a parent that is a file
        return _Destination(Path(os.path.realpath(path)))
    except OSError as err:  # a loop of links, a folder that cannot be searched
        raise OutputError(f"{path}: cannot be written ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"{path}: is a folder, not a file")
    if descriptor is not None:
        own = descriptor.parts[2] == str(os.getpid())  # /proc/PID/...
        return _Destination(path, through=True, descriptor=int(descriptor.name) if own else None)
    if stat.S_ISREG(mode):
        return _Destination(Path(os.path.realpath(path)))
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return _Destination(path, through=True)
    kind = "block device (a disk)" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"
    raise OutputError(f"{path}: is a {kind}; a report is written to a file, a FIFO or a character device "
                      f"such as /dev/stdout")


def _descriptor_entry(path: Path) -> Path | None:
    """The /proc/PID/fd/N entry `path` leads to when it names an open file descriptor (/dev/stdout, /dev/fd/3,
    /proc/self/fd/1, a link to one), else None. Such a path is written through even when the descriptor is a
    regular file: replacing that file would cut it from the shell's redirection (`> out.json`)."""
    current = Path(os.path.abspath(path))
    for _ in range(40):  # the kernel's own limit on the links one path may follow
        folder = os.path.realpath(current.parent)
        if _DESCRIPTOR_FOLDER.fullmatch(folder) and current.name.isdigit():
            return Path(folder) / current.name
        if not current.is_symlink():
            return None
        current = Path(os.path.abspath(os.path.join(folder, os.readlink(current))))
    return None


def _write_through(destination: _Destination, data: bytes) -> None:
    if destination.descriptor is not None:  # this process's own: write at its offset, after what it printed
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                if stream.fileno() == destination.descriptor:
                    stream.flush()
        _write_all(destination.descriptor, data)
        return
    # A FIFO's open waits for its reader, as the shell's `>` does. O_APPEND: a descriptor of another process
    # that is a regular file keeps what that process wrote before.
    handle = os.open(destination.path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if stat.S_ISREG(os.fstat(handle).st_mode) and _descriptor_entry(destination.path) is None:
            raise OutputError(f"{destination.path}: became a regular file while it was written; run again")
        _write_all(handle, data)
    finally:
        os.close(handle)


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view):]


def _replace_file(real: Path, data: bytes) -> None:
    """A temporary file beside `real`, flushed to disk and renamed over it: readers see the old report or the new
    one, never half of one, and a failure (a full disk) leaves the old one. A replaced file keeps its permissions;
    a new one gets what a plain open gives under the umask (mkstemp makes 0600)."""
    real.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    handle, temporary = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, real)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _writing(target: Path, every_errno: bool = False) -> Iterator[None]:
    """A full disk, an exceeded quota or a read-only file system becomes one line naming the output; with
    `every_errno` (a report file, where any OSError is the place's, not the tool's: a closed pipe, EIO), any."""
    try:
        yield
    except OSError as err:
        if isinstance(err, UserError) or not (every_errno or err.errno in WRITE_ERRNOS):
            raise
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise OutputError(f"{target}: cannot be written ({reason})") from None


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask
