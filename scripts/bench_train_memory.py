"""Peak RSS and wall time of `mtl-onnx train --max-steps 3` as the training data grows: the two tasks' training files
repeated N times (AG News + TweetEval: 70,179 rows at 1x, 701,790 at 10x), each run a fresh process.

    python -m scripts.bench_train_memory --data data --scale 1 --scale 10 --scale 100

`--data` holds `ag_news/train.jsonl` and `tweet_eval_sentiment/train.jsonl` (the full training splits; the bundled
demo sample works too, with far fewer rows). Every scale runs twice against one fresh tokenized-data cache: "first"
reads, checks and tokenizes the files into it, "again" finds them there. `--checkout` runs another checkout's CLI
(an older commit, for the before column; it ignores the cache). Peak RSS comes from os.wait4 (the train process and
any tokenizing workers it started, no sampling); the repeated files are written before the clock starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = {"topic": "ag_news", "sentiment": "tweet_eval_sentiment"}


def repeated(source: Path, target: Path, times: int) -> int:
    text = source.read_bytes()
    if not text.endswith(b"\n"):
        text += b"\n"
    with target.open("wb") as handle:
        for _ in range(times):
            handle.write(text)
    return text.count(b"\n") * times


def run(checkout: Path, files: dict[str, Path], output: Path, cache: Path, extra: list[str]) -> tuple[float, float]:
    command = [sys.executable, "-m", "mtl.cli", "train", "--max-steps", "3", "--output", str(output), *extra]
    for task, path in files.items():
        command += ["--task", f"{task}={path}"]
    env = {**os.environ, "MTL_ONNX_CACHE": str(cache), "PYTHONPATH": str(checkout)}
    started = time.perf_counter()
    with open(output.parent / f"{output.name}.log", "w") as log:
        child = subprocess.Popen(command, cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"train failed (status {status}); see {output.parent / f'{output.name}.log'}")
    return usage.ru_maxrss / 1024, wall  # MiB (ru_maxrss is in KiB on Linux), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--scale", type=int, action="append", required=True)
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--num-proc", type=int, default=None, help="passed to train (this checkout's CLI only)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the repeated files (default: a temp)")
    args = parser.parse_args()
    extra = ["--num-proc", str(args.num_proc)] if args.num_proc else []
    work = Path(tempfile.mkdtemp(prefix="bench-train-memory-", dir=args.work))
    print("| training rows | data size | run | peak RSS | wall |\n| ---: | ---: | --- | ---: | ---: |", flush=True)
    try:
        for scale in args.scale:
            files, rows, size = {}, 0, 0
            for task, folder in TASKS.items():
                files[task] = work / f"{task}-x{scale}.jsonl"
                rows += repeated(args.data / folder / "train.jsonl", files[task], scale)
                size += files[task].stat().st_size
            cache = work / f"cache-x{scale}"
            for attempt in ("first", "again"):
                rss, wall = run(args.checkout, files, work / f"run-x{scale}-{attempt}", cache, extra)
                print(f"| {rows:,} | {size / 2**20:,.0f} MiB | {attempt} | {rss:,.0f} MiB | {wall:.0f} s |", flush=True)
            for path in [*files.values(), cache, *work.glob(f"run-x{scale}-*")]:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
