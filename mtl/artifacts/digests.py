"""The size and sha256 of a file, as a manifest records them for each file of an export (and a checkpoint for each
data file it was trained on): what the file held when it was recorded, so that a truncated, corrupted or swapped
file is named when it is loaded. A check against damage and mix-ups, not a signature: whoever can edit the files
can edit the record. No torch."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mtl.artifacts.fields import need, number
from mtl.config import Range

FILE_SIZE = Range(0, 2**62, whole=True)
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileDigest:
    """What a file held when it was recorded."""

    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> FileDigest:
        size, digest = number(data, "size", FILE_SIZE, where), need(data, "sha256", str, where)
        if not SHA256.fullmatch(digest):
            raise ValueError(f"{where}sha256 is {digest[:70]!r}, not 64 lowercase hex digits")
        return cls(size, digest)

    @classmethod
    def of(cls, data: bytes) -> FileDigest:
        return cls(len(data), hashlib.sha256(data).hexdigest())


def file_digest(path: Path) -> FileDigest:
    """The size and sha256 of the file at `path`."""
    with open(path, "rb") as handle:
        return stream_digest(handle)


def stream_digest(handle: BinaryIO, limit: int | None = None) -> FileDigest:
    """The size and sha256 of what `handle` holds from where it is, read in blocks (a graph may be gigabytes).
    With `limit`, no further than one byte past it: enough to know the content is longer than the size expected."""
    digest, size = hashlib.sha256(), 0
    while block := handle.read(1 << 20 if limit is None else min(1 << 20, limit + 1 - size)):
        digest.update(block)
        size += len(block)
    return FileDigest(size, digest.hexdigest())
