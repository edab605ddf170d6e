"""Report files (`--json`, `--markdown`, `--plot`): written where the user pointed, whatever is at the path
(`write_output_file`, checked before the work by `check_output_file`). A regular file, or a path where nothing is
yet, is replaced whole by renaming a temporary file over it; a symbolic link is followed and its target replaced
so (the link stays, the file it names gets the report); a FIFO, a character device (`/dev/null`) or an open file
descriptor (`/dev/stdout`, `/dev/fd/N`) is written through, never replaced. A link's target is replaced by rename
too, not rewritten in place: the link is only how the user says where, and the file behind it deserves what any
report file gets (a reader never sees half of it, a full disk leaves the old one); its permissions are kept. A
report never replaces an input of the command that writes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mtl.artifacts.publish import check_writable, umask, writing
from mtl.errors import OutputError

# The /proc folder of a process's open file descriptors; /dev/fd, /dev/stdout and /proc/self/fd lead there.
_DESCRIPTOR_FOLDER = re.compile(r"/proc/(\d+)(?:/task/\d+)?/fd")


@dataclass(frozen=True)
class _Destination:
    """Where a report goes: `path` is replaced whole (a regular file or nothing yet, links followed), or written
    through (a FIFO, a character device, an open descriptor; `descriptor` when it is this process's own)."""

    path: Path
    through: bool = False
    descriptor: int | None = None


def check_output_file(path: Path, inputs: Iterable[Path | None] = ()) -> None:
    """One `OutputError` if a report could not be written to `path`, for the CLI to call before the work: a
    folder, a block device or socket, a closed descriptor, a dangling link, a read-only file, or a folder where no
    file can be created (a read-only file system, /proc, /sys). A full disk can only show when it is written.
    The report may not replace one of the command's `inputs` (a data file, or a file of a model folder, links
    followed): `--json` given the path of the data or of the model's manifest would destroy what was read."""
    destination = _destination(Path(path))
    if destination.through:
        if not os.access(path, os.W_OK):
            raise OutputError(f"{path}: is not writable")
        return
    real = destination.path
    for given in filter(None, inputs):
        source = os.path.realpath(given)
        if str(real) == source or (str(real).startswith(os.path.join(source, "")) and real.exists()):
            raise OutputError(f"{path}: is {'a file of ' if str(real) != source else ''}{given}, an input of this "
                              f"command; the report would replace it, so write it somewhere else")
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
    with writing(path, every_errno=True):
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
        mode = 0o666 & ~umask()
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
