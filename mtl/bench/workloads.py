"""The two workloads: a synthetic sweep of fixed (batch, sequence) shapes, and real text from a corpus.

Every backend gets the same inputs: synthetic token ids come from one seeded generator, and the corpus is read
once by the parent and handed to each worker. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from mtl.config import ModelConfig
from mtl.data.files import DEMO_TASKS, demo_task_files, parse_named_files, read_examples
from mtl.errors import ConfigError, DataError

# Sized for a 2-core CPU: the largest cell (32 x 256 tokens) takes about a second per call there.
DEFAULT_BATCH_SIZES = (1, 8, 32)
DEFAULT_SEQUENCE_LENGTHS = (16, 64, 128, 256)
MAX_BATCH_SIZE = 1024  # far past any sensible CPU batch; a typo like 3200 would otherwise exhaust memory
INPUT_SEED = 1234
FIRST_ORDINARY_ID = 5  # past [PAD]/[UNK]/[CLS]/[SEP]/[MASK] in BERT-style vocabularies


@dataclass(frozen=True)
class Shape:
    batch: int
    sequence: int

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.sequence}"


class TextPass(NamedTuple):
    """One timed pass over the corpus, as a runner hands it out: the call, the (rows, padded length) of every
    batch it runs, and how it pads: "max_length" (every batch to the model's limit) or "dynamic" (each batch to its
    longest row)."""

    call: Callable[[], Any]
    shapes: list[list[int]]
    padding: str


def padded_shapes(lengths: list[int], batches: list[list[int]]) -> list[list[int]]:
    """(rows, padded length) of each batch of row indices padded to its longest row; `lengths` are in tokens."""
    return [[len(rows), max(lengths[i] for i in rows)] for rows in batches]


def sweep_shapes(batch_sizes, sequence_lengths, max_positions: int) -> list[Shape]:
    """Every (batch, sequence) pair, after checking each against the model's limits."""
    if not batch_sizes or not sequence_lengths:
        raise ConfigError("the synthetic sweep needs at least one batch size and one sequence length")
    for batch in batch_sizes:
        check_batch_size(batch)
    for sequence in sequence_lengths:
        if sequence < 2:
            raise ConfigError(f"sequence length must be at least 2 (the [CLS] and [SEP] tokens), got {sequence}")
        if sequence > max_positions:
            raise ConfigError(f"sequence length {sequence} is beyond the model's limit of {max_positions} "
                              f"positions; valid: 2..{max_positions}")
    return [Shape(b, s) for b in dict.fromkeys(batch_sizes) for s in dict.fromkeys(sequence_lengths)]


def check_batch_size(batch: int, what: str = "batch size") -> None:
    if not 1 <= batch <= MAX_BATCH_SIZE:
        raise ConfigError(f"{what} {batch} is outside the bench's limits; valid: 1..{MAX_BATCH_SIZE}")


def synthetic_inputs(shape: Shape, vocab_size: int) -> dict[str, np.ndarray]:
    """Full-length rows (no padding: the shape is the cost) of random ordinary token ids, int64, the same for every
    backend. Runners take the names their graph or model declares; token_type_ids are zeros, as for one segment."""
    rng = np.random.default_rng(INPUT_SEED + 7919 * shape.batch + shape.sequence)
    low = min(FIRST_ORDINARY_ID, vocab_size - 1)
    ids = rng.integers(low, vocab_size, size=(shape.batch, shape.sequence), dtype=np.int64)
    ones = np.ones_like(ids)
    return {"input_ids": ids, "attention_mask": ones, "token_type_ids": np.zeros_like(ids)}


def load_corpus(path: Path | None, text_field: str = "text", limit: int | None = None) -> tuple[list[str], str]:
    """(texts, where they came from). The default is the bundled demo validation texts, taken from each task in
    turn so that short tweets and longer news items are mixed as in a real stream."""
    if limit is not None and limit < 1:
        raise ConfigError(f"corpus limit must be at least 1, got {limit}")
    if path is not None:
        # Only `limit` rows are read: a corpus may be a stream that never ends (`--corpus <(yes text)`).
        return [e.text for e in read_examples(Path(path), text_field, label_field=None, limit=limit)], str(path)
    per_file = [[e.text for e in read_examples(f.validation, "text", None)] for f in demo_task_files()]
    mixed = [text for group in zip(*per_file) for text in group]
    return (mixed[:limit] if limit else mixed), "bundled demo validation texts (AG News, TweetEval)"


def demo_validation_files(config: ModelConfig) -> dict[str, Path]:
    """The bundled validation files of the demo tasks this model has (quickstart's topic and sentiment)."""
    files = {f.name: f.validation for f in demo_task_files() if f.name in config.task_names}
    if not files:
        raise ConfigError(f"`--validation-data demo` needs a model with a demo task ({', '.join(DEMO_TASKS)}); "
                          f"this one has {', '.join(config.task_names)}")
    return files


def parse_validation_specs(specs: list[str]) -> dict[str, Path] | str:
    """`TASK=FILE` strings (as `mtl-onnx export` takes them), or the single word `demo`."""
    return "demo" if specs == ["demo"] else parse_named_files(specs, "--validation-data", "TASK=FILE")


def load_validation(files: dict[str, Path], config: ModelConfig, limit: int | None, text_field: str = "text",
                    label_field: str = "label") -> dict[str, dict]:
    """{task: {"texts": [...], "labels": [label index, ...], "file": str}}; unknown tasks, missing files and
    labels the model does not know fail here, before any timing starts."""
    data = {}
    for task, path in files.items():
        labels = config.task(task).labels
        examples = read_examples(Path(path), text_field, label_field, limit=limit, labels=labels)
        if not examples:
            raise DataError(f"{path}: no examples")
        data[task] = {"texts": [e.text for e in examples], "labels": [labels.index(e.label) for e in examples],
                      "file": str(path)}
    return data
