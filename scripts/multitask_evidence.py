"""Does one multi-task model pay? A single-task model per task and one multi-task model, trained on the same
examples with the same recipe, compared on the validation splits, on training time and on inference cost:

    python -m scripts.multitask_evidence --output runs/evidence
    python -m scripts.multitask_evidence --output runs/evidence --epochs 1 -- --class-weights balanced

Equal budget: each run trains `--epochs` passes over its tasks' training files with proportional sampling, so
the multi-task model sees each task's examples as often as that task's single-task model does (the script
prints the exact counts the sampler draws). Everything after `--` is passed to every `mtl-onnx train` run.
Inference cost is the time to give every task's prediction for the validation texts of all tasks: one encoder
pass per text for the multi-task model, one per model and text for the single-task ones (PyTorch, length-sorted
batches of 64, this machine's threads).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"  # the full splits, brought by the user (docs/training.md)
TASK_FOLDERS = {"topic": "ag_news", "sentiment": "tweet_eval_sentiment"}  # each with train.jsonl, validation.jsonl
BATCH_SIZE, SEED = 16, 42  # the sampler's draw depends on both (see `drawn_examples`)
RECIPE = ["--batch-size", str(BATCH_SIZE), "--grad-accumulation", "2", "--encoder-lr", "5e-5",
          "--warmup-ratio", "0.06", "--sampling", "proportional", "--seed", str(SEED)]
METRICS = ("accuracy", "macro_f1", "macro_recall")


def parse_args(argv=None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/evidence"), help="one model folder per run here")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with ag_news/ and tweet_eval_sentiment/")
    parser.add_argument("--epochs", type=int, default=1, help="passes over each task's training data")
    parser.add_argument("--inference-texts", type=int, default=1000, help="validation texts timed per task")
    parser.add_argument("--json", type=Path, help="also write the results here (default: OUTPUT/evidence.json)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be a whole number of passes, at least 1 (equal budget needs whole passes)")
    args.extra = extra
    args.files = {task: (args.data / folder / "train.jsonl", args.data / folder / "validation.jsonl")
                  for task, folder in TASK_FOLDERS.items()}
    return args


def train(name: str, tasks: list[str], args: argparse.Namespace) -> float:
    """Train one model with `mtl-onnx train`; returns its wall seconds (tokenizing and validation included)."""
    folder = args.output / name
    command = [sys.executable, "-m", "mtl.cli", "train", "--output", str(folder), "--epochs", str(args.epochs),
               *RECIPE, *args.extra]
    for task in tasks:
        train_file, validation_file = args.files[task]
        command += ["--task", f"{task}={train_file},{validation_file}"]
    if (folder / "metrics.json").is_file() and (args.output / f"{name}.seconds").is_file():
        print(f"{name}: already trained in {folder}, reusing it", file=sys.stderr)
        return json.loads((args.output / f"{name}.seconds").read_text())
    print(f"{name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    (args.output / f"{name}.seconds").write_text(json.dumps(round(seconds, 1)))
    return seconds


def validation_metrics(name: str, tasks: list[str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The model's validation figures from `mtl-onnx evaluate` (float32 PyTorch, as a user runs it; training's
    own per-epoch figures are taken under the run's autocast)."""
    out = args.output / f"{name}.validation.json"
    command = [sys.executable, "-m", "mtl.cli", "evaluate", str(args.output / name), "--json", str(out)]
    for task in tasks:
        command += ["--task", f"{task}={args.files[task][1]}"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def drawn_examples(tasks: list[str], args: argparse.Namespace) -> dict[str, int]:
    """How many examples of each task the run's sampler draws (the trainer's sampler, same seed and sizes)."""
    from mtl.data.dataset import TaskBatchSampler, task_probabilities
    from mtl.data.files import read_examples

    sizes = [len(read_examples(args.files[task][0])) for task in tasks]
    counts: Counter = Counter()
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    for epoch in range(args.epochs):
        sampler = TaskBatchSampler(sizes, BATCH_SIZE, task_probabilities(sizes, "proportional"), seed=SEED)
        sampler.set_epoch(epoch)
        for batch in sampler:
            counts.update(sum(row >= offset for offset in offsets) - 1 for row in batch)
    return {task: counts[i] for i, task in enumerate(tasks)}


def inference_seconds(folders: list[Path], texts: list[str]) -> float:
    """Seconds for every task's prediction on `texts` with these models (one encoder pass each), best of 3."""
    from mtl.model import TorchPredictor

    predictors = [TorchPredictor.load(folder) for folder in folders]
    for predictor in predictors:
        predictor.logits(texts[:64])  # warm-up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for predictor in predictors:
            predictor.logits(texts)
        best = min(best, time.perf_counter() - started)
    return best


def main(argv=None) -> None:
    args = parse_args(argv)
    from mtl.data.files import read_examples

    args.output.mkdir(parents=True, exist_ok=True)
    runs = {"topic-only": ["topic"], "sentiment-only": ["sentiment"], "multi-task": list(TASK_FOLDERS)}
    seconds = {name: train(name, tasks, args) for name, tasks in runs.items()}
    texts = [e.text for task in TASK_FOLDERS for e in read_examples(args.files[task][1])[:args.inference_texts]]
    results = {"recipe": RECIPE + ["--epochs", str(args.epochs)] + args.extra, "runs": {}}
    for name, tasks in runs.items():
        metrics = validation_metrics(name, tasks, args)
        results["runs"][name] = {"tasks": tasks, "train_seconds": round(seconds[name], 1),
                                 "examples_drawn": drawn_examples(tasks, args), "validation": metrics}
    single = [args.output / "topic-only", args.output / "sentiment-only"]
    results["inference"] = {
        "texts": len(texts),
        "single_task_models_seconds": round(inference_seconds(single, texts), 2),
        "multi_task_model_seconds": round(inference_seconds([args.output / "multi-task"], texts), 2),
    }
    (args.json or args.output / "evidence.json").write_text(json.dumps(results, indent=2))
    print(report(results))


def report(results: dict) -> str:
    lines = ["| task | model | examples trained on | accuracy | macro-F1 | macro-recall |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for task in TASK_FOLDERS:
        for name, run in results["runs"].items():
            if task in run["tasks"]:
                scores = " | ".join(f"{100 * run['validation'][task][m]:.2f}" for m in METRICS)
                lines.append(f"| {task} | {name} | {run['examples_drawn'][task]:,} | {scores} |")
    runs = results["runs"]
    single_train = runs["topic-only"]["train_seconds"] + runs["sentiment-only"]["train_seconds"]
    multi_train = runs["multi-task"]["train_seconds"]
    inference = results["inference"]
    lines += ["", "| cost | two single-task models | one multi-task model |", "| --- | ---: | ---: |",
              f"| training wall time | {single_train / 60:.1f} min | {multi_train / 60:.1f} min |",
              "| encoder passes per text (both tasks) | 2 | 1 |",
              f"| both tasks for {inference['texts']:,} texts | {inference['single_task_models_seconds']:.1f} s | "
              f"{inference['multi_task_model_seconds']:.1f} s |",
              "| parameters served | 2 encoders + 2 heads | 1 encoder + 2 heads |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
