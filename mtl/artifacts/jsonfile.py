"""Reading and writing the tool's small JSON files (configs, manifests, metrics, reports): UTF-8, indented, one
trailing newline, non-ASCII kept readable, never NaN (which is not JSON), and written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mtl.artifacts.publish import write_text_atomic


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
