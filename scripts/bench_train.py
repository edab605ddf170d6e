"""Training throughput: examples/s, real tokens/s, the share of real (not padding) tokens and peak memory, for a
fixed number of optimizer steps of the real trainer, in each setting:

    python -m scripts.bench_train                       # data/, the full-run recipe of docs/training.md
    python -m scripts.bench_train --steps 100 --setting grouped --setting grouped-bf16 --json train-bench.json

Settings: `random` is training as it was before length grouping (mixed batches padded to their longest row),
`grouped` the length-grouped batches (the default), `*-bf16` adds bfloat16 autocast (the default where the CPU
computes in bf16 natively). Each setting runs in a
fresh process (its own peak memory, no warm caches from another); the first `--warmup-steps` optimizer steps
are not timed. Training only: no evaluation, and the checkpoint saved at the end is outside the timed steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"  # the full splits, brought by the user (docs/training.md)
DEFAULT_TASKS = [f"topic={DATA / 'ag_news' / 'train.jsonl'}",
                 f"sentiment={DATA / 'tweet_eval_sentiment' / 'train.jsonl'}"]
SETTINGS = {
    "random": {"group_by_length": False, "precision": "fp32"},
    "grouped": {"group_by_length": True, "precision": "fp32"},
    "random-bf16": {"group_by_length": False, "precision": "bf16"},
    "grouped-bf16": {"group_by_length": True, "precision": "bf16"},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", action="append", help="NAME=TRAIN_FILE; repeat (default: data/)")
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS),
                        help="repeat; default: random, grouped, grouped-bf16")
    parser.add_argument("--backbone", default=None, help="default: the default backbone (MiniLM)")
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=5, help="optimizer steps before timing starts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grad-accumulation", type=int, default=2)
    parser.add_argument("--sampling", default="temperature")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one setting, in a child process
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup_steps < 0:
        parser.error("--steps must be at least 1 and --warmup-steps at least 0")
    args.task = args.task or DEFAULT_TASKS
    args.setting = args.setting or ["random", "grouped", "grouped-bf16"]
    return args


class CountingCollator:
    """The trainer's collator, counting the real and the padded tokens and the rows of every batch it makes."""

    def __init__(self, collate):
        self.collate = collate
        self.real = self.padded = self.rows = 0

    def __call__(self, items):
        batch = self.collate(items)
        self.real += int(batch["attention_mask"].sum())
        self.padded += batch["attention_mask"].numel()
        self.rows += len(items)
        return batch


def run_setting(args: argparse.Namespace) -> dict:
    """Train `--warmup-steps + --steps` optimizer steps in this process and measure the timed ones."""
    import torch
    from transformers import TrainerCallback

    from mtl.bench.worker import peak_rss_bytes
    from mtl.config import DEFAULT_BACKBONE, ModelOptions, TrainConfig
    from mtl.data.dataset import MultitaskDataset
    from mtl.data.files import TaskFiles
    from mtl.data.tokenized import TokenCache, Tokenization, default_cache
    from mtl.model import MultitaskModel, encoder_input_names, load_backbone, load_tokenizer
    from mtl.train.run import load_tasks
    from mtl.train.trainer import build_trainer

    backbone = args.backbone or DEFAULT_BACKBONE
    cache = TokenCache(default_cache())
    tasks = load_tasks([TaskFiles.parse(spec) for spec in args.task], cache)
    encoder, tokenizer = load_backbone(backbone), load_tokenizer(backbone)
    model_config = ModelOptions(backbone=backbone).model_config(
        [t.spec for t in tasks], encoder_input_names(encoder, tokenizer), args.max_length)
    model = MultitaskModel(model_config, encoder)
    tokenization = Tokenization(tokenizer, model_config.max_length, model_config.input_names)
    train_set = MultitaskDataset([cache.tokens(t.train, t.spec.labels, tokenization) for t in tasks],
                                 list(range(len(tasks))))

    class Marks(TrainerCallback):
        """(time, real tokens, padded tokens, rows) when timing starts and at the last step."""

        def __init__(self):
            self.start = self.end = None

        def on_step_end(self, run_args, state, control, **kwargs):
            mark = (time.perf_counter(), counter.real, counter.padded, counter.rows)
            if state.global_step == args.warmup_steps:
                self.start = mark
            self.end = mark

    with tempfile.TemporaryDirectory() as work:
        config = TrainConfig(output_dir=work, max_steps=args.warmup_steps + args.steps, batch_size=args.batch_size,
                             grad_accumulation=args.grad_accumulation, encoder_lr=5e-5, warmup_ratio=0.06,
                             sampling=args.sampling, logging_steps=10**6, **SETTINGS[args.worker])
        marks = Marks()
        trainer = build_trainer(model, tokenizer, train_set, None, config, [marks], Path(work))
        counter = CountingCollator(trainer.data_collator)
        trainer.data_collator = counter
        if args.warmup_steps == 0:
            marks.start = (time.perf_counter(), 0, 0, 0)
        trainer.train()
    seconds = marks.end[0] - marks.start[0]
    real, padded, rows = (marks.end[i] - marks.start[i] for i in (1, 2, 3))
    return {
        "setting": args.worker, **SETTINGS[args.worker], "steps": args.steps, "examples": rows,
        "seconds": round(seconds, 2), "examples_per_s": round(rows / seconds, 2),
        "real_tokens_per_s": round(real / seconds, 1), "real_token_share": round(real / padded, 4),
        "peak_rss_mib": round(peak_rss_bytes() / 2**20, 1), "torch_threads": torch.get_num_threads(),
    }


def child_argv(args: argparse.Namespace, setting: str) -> list[str]:
    argv = [sys.executable, "-m", "scripts.bench_train", "--worker", setting, "--steps", str(args.steps),
            "--warmup-steps", str(args.warmup_steps), "--batch-size", str(args.batch_size),
            "--grad-accumulation", str(args.grad_accumulation), "--sampling", args.sampling,
            "--max-length", str(args.max_length)]
    for spec in args.task:
        argv += ["--task", spec]
    return argv + (["--backbone", args.backbone] if args.backbone else [])


def main(argv=None) -> None:
    from mtl.bench.environment import cpu_info

    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_setting(args)))
        return
    cpu = cpu_info().model
    print(f"{args.steps} timed optimizer steps of {args.batch_size} x {args.grad_accumulation} examples, "
          f"{args.sampling} sampling, on {cpu}", file=sys.stderr)
    results = []
    for setting in args.setting:
        print(f"  {setting} ...", file=sys.stderr, flush=True)
        child = subprocess.run(child_argv(args, setting), capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parents[1])
        if child.returncode != 0:
            raise SystemExit(f"setting {setting} failed:\n{child.stderr.strip()[-2000:]}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    base = results[0]["examples_per_s"]
    print(f"| setting | examples/s | real tokens/s | real-token share | peak RSS | vs {results[0]['setting']} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in results:
        print(f"| {row['setting']} | {row['examples_per_s']:.1f} | {row['real_tokens_per_s']:,.0f} | "
              f"{row['real_token_share']:.0%} | {row['peak_rss_mib']:,.0f} MiB | {row['examples_per_s'] / base:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "args": {k: v for k, v in vars(args).items()
                                         if k not in ("json", "worker")}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
