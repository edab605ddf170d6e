"""Opening an input as the user names it and turning its bytes into lines: the bottom of the one reader layer. No
torch.

- A source is `-` (stdin) or a path to anything readable that is not a folder: a regular file, a FIFO, `/dev/stdin`,
  `/dev/fd/N` of a process substitution `<(...)`. Every source is read once, front to back, in chunks as they
  arrive (`read1`): nothing reads a stream twice, and a line is handed on as soon as its line end has arrived.
- Encoding: UTF-8 (a byte-order mark is dropped), or UTF-16 / UTF-32 when the source starts with their byte-order
  mark. A byte that does not decode becomes the lone surrogate U+DC00 + byte, so that the line holding it is
  named as an error (`undecodable`) and never passed on as text.
- Lines end at `\\n`, `\\r\\n` or a lone `\\r` (old Mac files): N lines in, N lines out. U+2028, U+0085 and the
  other separators `str.splitlines` knows are text, as JSON says they are.
- Format: a declared one, else the suffix (.jsonl/.json/.ndjson, .csv, .tsv, .txt; any other suffix is plain text
  where plain text is read, and refused where labelled rows are). A source without a suffix (stdin, `/dev/fd/N`
  of `<(...)`, a FIFO or file named without one) is JSON Lines when its first non-blank line starts with `{`;
  else plain text where plain text is read (predict), and CSV (TSV when that line has tabs but no comma) where
  labelled rows are.
"""

from __future__ import annotations

import codecs
import itertools
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mtl.errors import DataError

STDIN = "-"
FORMATS = ("txt", "jsonl", "csv", "tsv")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
                  ".txt": "txt"}
CHUNK_BYTES = 1 << 16
# One line may be a 20 MB document, JSON-escaped; a source with no line end for longer (/dev/zero, a disk image)
# is not text, and reading on would only fill the memory.
MAX_LINE_BYTES = 256 << 20
# Longest first: the UTF-32-LE mark starts with the UTF-16-LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_UNDECODABLE = re.compile("[\udc00-\udcff]")
_ERRORS = "mtl-undecodable"


def _mark_undecodable(err: UnicodeDecodeError) -> tuple[str, int]:
    return "".join(chr(0xDC00 + byte) for byte in err.object[err.start:err.end]), err.end


codecs.register_error(_ERRORS, _mark_undecodable)


@dataclass(frozen=True)
class Source:
    """What the user named, checked: `name` for messages, the format its suffix tells (None: none does)."""

    name: str
    path: Path | None  # None: stdin
    suffix: str
    regular: bool  # a regular file: it can be checked before the first row is needed


def open_source(source: Path | str) -> Source:
    """The source, or one `DataError` naming why it cannot be read (missing, a folder, no permission). Nothing is
    opened yet: opening a FIFO waits for its writer."""
    if str(source) == STDIN:
        return Source(STDIN, None, "", False)
    path = Path(source)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err})") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot read it (permission denied)")
    return Source(str(path), path, path.suffix.lower(), stat.S_ISREG(mode))


class Lines:
    """The decoded lines of a source, each with its line end; `encoding` is known once the first line is read.
    Iterate once; the file is closed at the end (or by `close`)."""

    def __init__(self, source: Source):
        self.source = source
        self.encoding = "utf-8"
        self.count = 0  # lines handed out so far
        self._lines = self._read()

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def close(self) -> None:
        self._lines.close()

    def undecodable(self, line: str) -> str | None:
        """The error of a line holding bytes that did not decode, naming the first such byte; else None."""
        bad = _UNDECODABLE.search(line)
        if bad is None:
            return None
        return (f"not valid {self.encoding.upper()} (byte 0x{ord(bad.group()) - 0xDC00:02x}); "
                f"save the file as UTF-8")

    def _read(self) -> Iterator[str]:
        handle = self._open()
        try:
            chunks = iter(lambda: handle.read1(CHUNK_BYTES), b"")
            head, self.encoding = _byte_order_mark(chunks)
            chunks = itertools.chain([head], chunks)
            try:
                if self.encoding == "utf-8":
                    for raw in _split(chunks, _BYTE_LINE_END, b"\r"):
                        self.count += 1
                        yield raw.decode("utf-8", _ERRORS)
                else:
                    for line in _split(_decoded(chunks, self.encoding), _TEXT_LINE_END, "\r"):
                        self.count += 1
                        yield line
            except _LineTooLong:
                raise DataError(f"{self.source.name}:{self.count + 1}: no line end in the first "
                                f"{MAX_LINE_BYTES >> 20} MiB of this line: not a text file") from None
        except OSError as err:
            raise DataError(f"{self.source.name}: cannot read it ({err.strerror or err})") from None
        finally:
            if self.source.path is not None:
                handle.close()

    def _open(self):
        if self.source.path is None:
            stdin = getattr(sys.stdin, "buffer", None)
            if stdin is None:
                raise DataError("-: stdin is closed; name a file instead of -")
            return stdin
        try:
            return open(self.source.path, "rb")  # noqa: SIM115 (closed by _read)
        except OSError as err:
            raise DataError(f"{self.source.name}: cannot read it ({err.strerror or err})") from None


def _byte_order_mark(chunks: Iterator[bytes]) -> tuple[bytes, str]:
    """(the first bytes without their byte-order mark, the encoding the mark names or utf-8). Reads only as far as
    a mark could reach: a stream's first short line is not held back."""
    head = b""
    while any(len(head) < len(bom) and bom.startswith(head) for bom, _ in _BOMS):
        chunk = next(chunks, b"")
        if not chunk:
            break
        head += chunk
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return head[len(bom):], encoding
    return head, "utf-8"


def _decoded(chunks: Iterator[bytes], encoding: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(encoding)(_ERRORS)
    for chunk in chunks:
        yield decoder.decode(chunk)
    yield decoder.decode(b"", True)  # a truncated last character: its bytes, marked as undecodable


_BYTE_LINE_END = re.compile(rb"\r\n?|\n")
_TEXT_LINE_END = re.compile(r"\r\n?|\n")


class _LineTooLong(Exception):
    pass


def _split(chunks, line_end: re.Pattern, cr):
    """Lines, each with its line end, from chunks of bytes or str. A CR that ends a chunk is held for the next one
    (it may be the first half of a CRLF); everything else is handed on as soon as it has arrived."""
    parts: list = []
    pending = 0  # length of the unfinished line in `parts`
    held = None
    for chunk in chunks:
        if held:
            chunk, held = held + chunk, None
        if chunk.endswith(cr):
            chunk, held = chunk[:-1], cr
        start = 0
        for match in line_end.finditer(chunk):
            parts.append(chunk[start:match.end()])
            yield chunk[:0].join(parts)
            parts, pending, start = [], 0, match.end()
        if start < len(chunk):
            parts.append(chunk[start:])
            pending += len(chunk) - start
            if pending > MAX_LINE_BYTES:
                raise _LineTooLong
    if held:
        parts.append(held)
    if parts:
        yield parts[0][:0].join(parts)


def sniff_format(lines: Iterator[str], plain_text: bool) -> tuple[str, Iterator[str]]:
    """The format of a source without a telling suffix, from its first non-blank line (held, then given back)."""
    held = []
    for line in lines:
        held.append(line)
        if line.strip():
            break
    first = held[-1].strip() if held else ""
    if first.startswith("{"):
        fmt = "jsonl"
    elif plain_text:
        fmt = "txt"
    else:
        fmt = "tsv" if "\t" in first and "," not in first else "csv"
    return fmt, itertools.chain(held, lines)


def strip_line_end(line: str) -> str:
    return line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith(("\n", "\r")) else line
