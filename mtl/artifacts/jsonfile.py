"""Reading and writing the tool's small JSON files (configs, manifests, metrics, reports): UTF-8, indented, one
trailing newline, non-ASCII kept readable, never NaN (which is not JSON), and written whole or not at all.

Every JSON file the tool reads goes through `read_json`, bounded, because folders travel: a file from someone else
is data of any size and shape. Refused, each as one `JSONFileError` line that the caller wraps in its own error
type: more than `max_bytes`, nesting deeper than `MAX_DEPTH`, NaN / Infinity (not JSON), numbers that overflow a
float (1e400 would read as inf), integers of more than `MAX_INT_DIGITS` digits, duplicate keys (which of the two
would win is a guess), lone UTF-16 surrogates (`\\ud800`: not text; `tokenizers` and every writer refuse them later).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from mtl.artifacts.publish import write_output_file

MAX_JSON_BYTES = 8 * 1024 * 1024  # a manifest or config is kilobytes; reports of a long bench run stay far below
MAX_DEPTH = 64  # the deepest file the tool writes nests 6 levels
MAX_INT_DIGITS = 20  # every integer the tool writes fits an int64 (19 digits and a sign)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_DEPTH_STEP = str.maketrans({"[": "\x01", "{": "\x01", "]": "\xff", "}": "\xff"})


class JSONFileError(ValueError):
    """A JSON file cannot be used; the message names the file and says why, in one line."""


def write_json(path: Path, data: Any) -> None:
    write_output_file(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The parsed content of the file at `path`, within the limits above; OSError where it cannot be read."""
    path = Path(path)
    # Opened without waiting (a FIFO put where a config belongs would block until a writer came), and read only as
    # a regular file, to at most one byte past the limit.
    with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise JSONFileError(f"{path}: not a regular file")
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise JSONFileError(f"{path}: more than {max_bytes:,} bytes, too big for a JSON file of this tool")
    try:
        return parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise JSONFileError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except JSONFileError as err:
        raise JSONFileError(f"{path}: {err}") from None


def parse_json(text: str) -> Any:
    """`text` parsed as JSON within the limits of `read_json`; a JSONFileError (a ValueError) says why not."""
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise JSONFileError(f"nested {depth} levels deep, more than the {MAX_DEPTH} a JSON file of this tool may")
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int,
                          object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise JSONFileError(f"not valid JSON ({err})") from None
    except RecursionError:  # not reached after the depth check; kept so that no parse can end in a traceback
        raise JSONFileError("nested too deep to read") from None
    if _LONE_SURROGATE.search(text):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JSONFileError("holds a \\ud800-\\udfff escape that is not half of a pair: not text") from None
    return data


def _depth(text: str) -> int:
    """How deep arrays and objects nest, from the brackets outside strings: a linear scan, no recursion, so a
    file 200,000 levels deep is measured before the parser (which recurses) ever sees it."""
    brackets = re.sub(r"[^\x01\xff]", "", _STRING.sub("", text).translate(_DEPTH_STEP))
    return max(itertools.accumulate(1 if c == "\x01" else -1 for c in brackets), default=0)


def _refuse_constant(name: str) -> Any:
    raise JSONFileError(f"holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONFileError(f"holds the number {text[:40]}, too large for a float")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JSONFileError(f"holds an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise JSONFileError(f"has the key {duplicate[:60]!r} twice in one object")
    return data
