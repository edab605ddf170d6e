"""What the bench tests share: the factory's tiny BERT checkpoint and its export, a small corpus, a report of the
earlier format, and a simulated Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factory import TINY

# A bench report as written before rows were typed records (the committed docs/bench.json of that time, the synthetic
# rows cut to two shapes): readers and writers must keep handling this format.
EARLIER_REPORT = Path(__file__).resolve().parent / "bench" / "data" / "report_before_records.json"


BENCH_MAX_LENGTH = 128  # past most demo texts, so that dynamic padding has something to save


def tiny_model() -> tuple[Path, Path]:
    """(checkpoint folder, export folder) of the factory's tiny BERT, built once per session."""
    return (TINY.checkpoint("bert", max_length=BENCH_MAX_LENGTH),
            TINY.export("bert", ("fp32", "int8"), max_length=BENCH_MAX_LENGTH))


def earlier_report() -> dict:
    """A full bench on MiniLM, written before rows were typed records."""
    return json.loads(EARLIER_REPORT.read_text(encoding="utf-8"))


def small_corpus(folder: Path, count: int = 6) -> Path:
    texts = ["Stocks rallied after the central bank cut rates.", "What a terrible game last night!",
             "NASA launched a new space telescope.", "I love this phone.", "The election results are in.",
             "The team won the match in the last minute of the season."]
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": texts[i % len(texts)]}) + "\n" for i in range(count)),
                    encoding="utf-8")
    return path


def tiny_args(checkpoint: Path, onnx: Path, corpus: Path) -> list[str]:
    """The smallest sensible bench: one shape, 1 warm-up, 2 runs, a few texts, no cold start."""
    return ["bench", "--checkpoint", str(checkpoint), "--onnx", str(onnx), "--batch-sizes", "2", "--seq-lengths",
            "8", "--warmup", "1", "--runs", "2", "--corpus", str(corpus), "--text-runs", "1",
            "--text-batch-size", "4", "--no-cold-start"]


def interrupt_second_sweep_cell(monkeypatch) -> None:
    """Make the ONNX Runtime runner raise KeyboardInterrupt on its second sweep cell, as a Ctrl-C would."""
    from mtl.bench.engines import OrtRunner

    original, calls = OrtRunner.sweep_call, []

    def interrupt_on_second_cell(self, mode, feeds):
        calls.append(mode)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, mode, feeds)

    monkeypatch.setattr(OrtRunner, "sweep_call", interrupt_on_second_cell)
