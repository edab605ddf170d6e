"""Peak RSS of `mtl-onnx predict --file` as the input grows: streaming keeps memory flat.

    python scripts/bench_predict_memory.py EXPORT_FOLDER 10000 100000 1000000

Each size runs in a fresh process; its own peak RSS comes from os.wait4 (no sampling).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = ["Stocks rallied after the central bank cut rates.", "What a comeback in the final minutes!",
         "New chip doubles battery life, the company says.", "ugh, monday again"]


def measure(export: Path, lines: int, work: Path) -> float:
    source = work / f"{lines}.txt"
    with source.open("w", encoding="utf-8") as handle:
        for i in range(lines):
            handle.write(f"{TEXTS[i % len(TEXTS)]} #{i}\n")
    with open(os.devnull, "w") as sink:
        child = subprocess.Popen([sys.executable, "-m", "mtl.cli", "predict", str(export), "--file", str(source)],
                                 stdout=sink, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"predict failed on {lines} lines (status {status})")
    source.unlink()
    # wait4 reports the child's own peak; the child is spawned by this small script, so a large parent's
    # memory (which ru_maxrss carries across fork + exec) cannot inflate it.
    return usage.ru_maxrss / 1024  # MiB (ru_maxrss is in KiB on Linux)


def main() -> None:
    export = Path(sys.argv[1])
    print("| input lines | input size | peak RSS |\n| ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as work:
        for lines in map(int, sys.argv[2:]):
            size = sum(len(f"{TEXTS[i % len(TEXTS)]} #{i}\n".encode()) for i in range(lines))
            rss = measure(export, lines, Path(work))
            print(f"| {lines:,} | {size / 2**20:.1f} MiB | {rss:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
