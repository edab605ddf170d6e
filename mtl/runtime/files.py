"""The export's files as the runtime reads them: opened once, at load, and checked against the size and sha256 the
manifest records. A file opened at load stays the one read later, even when the folder is republished (renamed
over) meanwhile, so every graph of one Predictor comes from the same export.

What was checked is what runs: `tokenizers` gets the very bytes that were hashed. ONNX Runtime gets, on Linux, the
open file itself (/proc/self/fd/N) right after it was hashed, not a copy of its bytes: ORT keeps bytes it is given
for the session's whole life (a known open item in its source), which measured +30 MiB peak RSS on the MiniLM int8
cold start (+90 MB per fp32 graph). Only a writer that changes the file in place in the milliseconds between the
hash and ORT's read could slip past that; elsewhere (no /proc), ORT gets the checked bytes.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from mtl.artifacts.digests import FileDigest, stream_digest
from mtl.artifacts.manifest import Manifest
from mtl.errors import RuntimeLoadError

log = logging.getLogger(__name__)
OPEN_FILES = Path("/proc/self/fd")  # Linux: opening /proc/self/fd/N opens the file that descriptor N holds
_WARNED: set[str] = set()  # folders already warned about having no digests: once per process each


class PinnedFile:
    """One file of an export folder, held open from load until `close`. Opened without blocking and refused
    unless it is a regular file (a FIFO put in a graph's place cannot hang the load)."""

    def __init__(self, path: Path, digest: FileDigest | None, max_bytes: int | None = None):
        self.path = Path(path)
        self.digest = digest
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as err:
            raise RuntimeLoadError(f"{self.path}: cannot be read ({err.strerror or err})") from None
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "not a regular file"
        elif digest is not None and info.st_size != digest.size:
            problem = self._size_problem(info.st_size)
        elif max_bytes is not None and info.st_size > max_bytes:
            problem = f"{info.st_size:,} bytes, more than the {max_bytes:,} this file may have"
        if problem:
            os.close(fd)
            raise RuntimeLoadError(f"{self.path}: {problem}")
        self._handle = os.fdopen(fd, "rb")

    def read(self) -> bytes:
        """The whole file, as opened at load, if it matches the manifest."""
        if self._handle is None:
            raise RuntimeError(f"{self.path} was closed already")  # a bug of the caller, not the user's
        self._handle.seek(0)
        data = self._handle.read()
        if self.digest is not None:
            self._check(FileDigest.of(data))
        return data

    def _check(self, found: FileDigest) -> None:
        if found.size != self.digest.size:  # changed in place since it was opened
            raise RuntimeLoadError(f"{self.path}: {self._size_problem(found.size)}")
        if found.sha256 != self.digest.sha256:
            raise RuntimeLoadError(f"{self.path}: its sha256 is not the one the manifest records: the file was "
                                   f"changed or belongs to another export; export again")

    def runtime_source(self) -> str | bytes:
        """What ONNX Runtime should load, checked against the manifest first (see the module's docstring)."""
        if not OPEN_FILES.is_dir():
            return self.read()
        if self.digest is not None:
            self._handle.seek(0)
            self._check(stream_digest(self._handle))
        return str(OPEN_FILES / str(self._handle.fileno()))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> PinnedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _size_problem(self, size: int) -> str:
        return (f"{size:,} bytes, but the manifest records {self.digest.size:,}: the file is truncated or belongs "
                f"to another export; export again")


def pin(folder: Path, manifest: Manifest, name: str, max_bytes: int | None = None) -> PinnedFile:
    """The manifest's file `name` (a path inside `folder` that `load_manifest` checked), opened and size-checked."""
    if not manifest.files and str(folder) not in _WARNED:
        _WARNED.add(str(folder))
        log.warning("%s: its manifest records no size and sha256 of its files (exported by an older mtl-onnx), so "
                    "they load unchecked; export again to have them checked", folder)
    return PinnedFile(Path(folder) / name, manifest.files.get(name), max_bytes)
