"""Whole-process throughput of `mtl-onnx predict` (one process) against `--engine ray` on the same real texts:

    python -m scripts.bench_ray --export runs/quickstart/onnx                  # 20,000 texts of data/
    python -m scripts.bench_ray --export onnx --config 2x1 --config 1x2 --repeats 3 --json ray-bench.json
    python -m scripts.bench_ray --export onnx --address HEAD:6379 --config 8x2   # an existing cluster

Every run is a fresh `mtl-onnx` process, timed from its start to its exit: Python and library imports, Ray's
start-up (a local instance sized to this machine, or joining `--address`), loading the model in each actor,
reading, predicting, writing the shards and publishing the folder all count, as a user waits for them. Local
predict writes its JSON lines to /dev/null. Configurations are `ACTORSxTHREADS` (actors, ONNX Runtime threads per
actor); the runs are interleaved over the repeats, so a change in the machine's load hits every configuration alike.

To explain Ray's overhead the same runs are made on a small input (`--small`, 200 texts): its time is almost only
fixed cost (start-up, model loads, the end), and (T(n) - T(small)) / (n - small) is the cost per text once running.
The local engine gets the same split, so the table shows which part of the difference is fixed and which is per
text (serialization, scheduling, the object store). `ray.init` alone is timed in its own process.

The export: `--export`, or `--build-minilm` to build the real all-MiniLM-L6-v2 export of the test factory (torch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"  # the full splits, brought by the user (docs/training.md)
SOURCES = ("ag_news/train.jsonl", "tweet_eval_sentiment/train.jsonl")


def main() -> None:
    args = _arguments()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        export = _export(args)
        corpus = _corpus(args.data, work / "corpus.jsonl", args.texts)
        small = _corpus(args.data, work / "small.jsonl", args.small)
        results = run_all(export, corpus, small, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, help="An export folder (default: --build-minilm).")
    parser.add_argument("--build-minilm", action="store_true", help="Build the factory's MiniLM export (torch).")
    parser.add_argument("--data", type=Path, default=DATA, help="Folder with ag_news/ and tweet_eval_sentiment/.")
    parser.add_argument("--texts", type=int, default=20_000, help="Texts, half from each dataset.")
    parser.add_argument("--small", type=int, default=200, help="Texts of the fixed-cost run.")
    parser.add_argument("--config", action="append", help="ACTORSxTHREADS (repeatable; default: 2x1 1x2 1x1).")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--address", help="Join this Ray cluster instead of starting a local one.")
    parser.add_argument("--json", help="Also write every measurement here.")
    return parser.parse_args()


def _export(args) -> Path:
    if args.export:
        return args.export
    if not args.build_minilm:
        raise SystemExit("give --export FOLDER, or --build-minilm to build the real MiniLM export (torch)")
    from tests.factory import TINY

    folder, _ = TINY.minilm_export()
    kept = Path(tempfile.mkdtemp(prefix="bench-ray-minilm-")) / "onnx"
    shutil.copytree(folder, kept)
    print(f"built the MiniLM export in {kept} (pass --export {kept} next time)", file=sys.stderr)
    return kept


def _corpus(data: Path, path: Path, count: int) -> Path:
    """`count` real texts, half AG News, half TweetEval (the first of each train file), one JSON object a line."""
    texts: list[str] = []
    for source in SOURCES:
        with open(data / source, encoding="utf-8") as handle:
            for line, _ in zip(handle, range(count // 2 + count % 2 * (source == SOURCES[0]))):
                texts.append(json.loads(line)["text"])
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def run_all(export: Path, corpus: Path, small: Path, work: Path, args) -> dict:
    configs = args.config or ["2x1", "1x2", "1x1"]
    runs: dict[str, dict[str, list[float]]] = {}
    init = []
    for _ in range(args.repeats):
        init.append(_time([sys.executable, "-c", _INIT.format(address=args.address)]))
        for name, command in _commands(export, work, configs, args.address):
            for size, source in (("n", corpus), ("small", small)):
                seconds = _time([*command, "--file", str(source)])
                runs.setdefault(name, {}).setdefault(size, []).append(seconds)
                print(f"{name:>10} {size:>5}: {seconds:6.2f} s  (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
    return {"texts": args.texts, "small": args.small, "runs": runs, "ray_init_s": init,
            "machine": _machine(), "load_average_after": os.getloadavg()}


def _commands(export: Path, work: Path, configs: list[str], address: str | None):
    cli = [sys.executable, "-m", "mtl.cli"]
    yield "local", [*cli, "predict", str(export)]
    for config in configs:
        actors, threads = config.split("x")
        command = [*cli, "predict", str(export), "--engine", "ray", "--output", str(work / "out"), "--overwrite",
                   "--actors", actors, "--threads-per-actor", threads]
        yield f"ray {config}", command + (["--address", address] if address else [])


_INIT = ("import ray; ray.init(address={address!r} or 'local', include_dashboard=False, log_to_driver=False); "
         "ray.shutdown()")


def _time(command: list[str]) -> float:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:8])} ... failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return seconds


def _machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version()}


def report(results: dict, args) -> str:
    n, small = results["texts"], results["small"]
    runs = results["runs"]
    local = statistics.median(runs["local"]["n"])
    lines = [f"{n:,} texts, {results['machine']['cpu']}, {results['machine']['cores']} cores; median of "
             f"{args.repeats}; load average after: {', '.join(f'{x:.2f}' for x in results['load_average_after'])}; "
             f"ray.init alone {statistics.median(results['ray_init_s']):.1f} s",
             "", "| engine | whole process s | texts/s | vs local | fixed cost s | per-text ms | running texts/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, sizes in runs.items():
        whole, fixed = statistics.median(sizes["n"]), statistics.median(sizes["small"])
        per_text = (whole - fixed) / (n - small)
        lines.append(f"| {name} | {whole:.1f} | {n / whole:,.0f} | {local / whole:.2f}x | {fixed:.1f} | "
                     f"{per_text * 1000:.3f} | {1 / per_text:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
