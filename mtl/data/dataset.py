"""The multi-task training set over its tokenized Arrow rows, its padding collator, and task sampling for batches."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mtl.data.tokenized import row_lengths
from mtl.errors import ConfigError


class MultitaskDataset(Dataset):
    """Every task's tokenized rows (`mtl.data.tokenized`: memory-mapped Arrow), laid end to end: the first part's
    rows, then the second's, ... A part is one task's rows; `task_ids` gives each part's task index in the model.

    An item is a dict of token id lists plus `labels` (class index within its task) and `task_ids`. A batch is
    fetched part by part in one Arrow read each (`__getitems__`, which the DataLoader calls with a batch's indices).
    `lengths`: tokens per row, for length grouping, read from the Arrow offsets only.
    """

    def __init__(self, parts: list, task_ids: list[int]):
        if len(parts) != len(task_ids):
            raise ValueError(f"{len(parts)} parts for {len(task_ids)} task ids")
        self.parts, self.task_ids = parts, list(task_ids)
        self.task_sizes = [len(part) for part in parts]
        self.offsets = np.concatenate([[0], np.cumsum(self.task_sizes)]).astype(np.int64)
        self.lengths = np.concatenate([row_lengths(part) for part in parts]) if parts else np.zeros(0, np.int32)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        part_of = np.searchsorted(self.offsets, indices, side="right") - 1
        items: list[dict] = [{} for _ in indices]
        for part in np.unique(part_of):
            where = np.flatnonzero(part_of == part)
            columns = self.parts[part][(indices[where] - self.offsets[part]).tolist()]
            for k, position in enumerate(where):
                item = items[position]
                for name, values in columns.items():
                    item[name] = values[k]
                item["task_ids"] = self.task_ids[part]
        return items

    def labels_of(self, part: int) -> np.ndarray:
        """The class index of every row of one part (one Arrow column, not the rows)."""
        return self.parts[part].data.column("labels").to_numpy()


class PaddingCollator:
    """Pads a batch to its longest row; labels and task ids become 1-d long tensors."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        batch = {}
        for key in items[0]:
            if key in ("labels", "task_ids"):
                batch[key] = torch.tensor([item[key] for item in items], dtype=torch.long)
                continue
            pad = self.pad_token_id if key == "input_ids" else 0
            rows = [item[key] + [pad] * (longest - len(item[key])) for item in items]
            batch[key] = torch.tensor(rows, dtype=torch.long)  # (batch, longest)
        return batch


def task_probabilities(sizes: list[int], mode: str, temperature: float = 2.0) -> np.ndarray:
    """Probability of drawing each task: uniform, proportional to its size, or p ∝ n^(1/T)."""
    counts = np.asarray(sizes, dtype=np.float64)
    if mode == "uniform":
        weights = np.ones_like(counts)
    elif mode == "proportional":
        weights = counts
    elif mode == "temperature":
        weights = counts ** (1.0 / temperature)
    else:
        raise ConfigError(f"unknown sampling {mode!r}; valid: uniform, proportional, temperature")
    return weights / weights.sum()


class TaskBatchSampler(Sampler[list[int]]):
    """Yields batches of dataset indices, drawing tasks with the given probabilities.

    Mixed batches draw a task per example; single-task batches draw one task per batch. Within a task,
    examples come from a reshuffled cycle, so proportional sampling sees every example once an epoch.
    The draw depends only on (seed, epoch): every DDP process builds the same batches, and the
    accelerate shard keeps its own share.

    With `lengths` (tokens per dataset row), batches are grouped by length: each window of `window` batches is
    drawn exactly as without grouping, then its rows are sorted by length and cut again into batches of the same
    sizes (per task, for single-task batches), and the window's batches are shuffled. The rows drawn, and so the
    task mix, stay the same; a batch pads to a length close to its rows' own instead of the longest of a random
    mix (on the project data about half the padded tokens of a random mixed batch are padding).
    """

    def __init__(self, task_sizes: list[int], batch_size: int, probabilities: np.ndarray,
                 mixed: bool = True, seed: int = 0, drop_last: bool = False,
                 lengths: list[int] | None = None, window: int = 50):
        if len(task_sizes) != len(probabilities) or min(task_sizes) < 1:
            raise ConfigError("every task needs at least one training example")
        if lengths is not None and len(lengths) != sum(task_sizes):
            raise ConfigError(f"{len(lengths)} lengths for {sum(task_sizes)} rows")
        if window < 1:
            raise ConfigError(f"the length-grouping window must be at least 1 batch, got {window}")
        self.task_sizes = list(task_sizes)
        self.offsets = np.concatenate([[0], np.cumsum(task_sizes)[:-1]]).astype(int)
        self.batch_size = batch_size
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self.mixed = mixed
        self.seed = seed
        self.drop_last = drop_last
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.window = window
        self.epoch = 0
        # accelerate's DataLoaderShard.set_epoch reaches a sharded (DDP) batch sampler only through
        # `.batch_sampler.sampler`; pointing `sampler` here makes every process reshuffle per epoch.
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        total = sum(self.task_sizes)
        return total // self.batch_size if self.drop_last else math.ceil(total / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        drawn = self._drawn_batches(rng)
        if self.lengths is None:
            yield from drawn
            return
        # A second generator for the grouping, so the rows drawn are the same with and without it.
        order_rng = np.random.default_rng([self.seed, self.epoch, 1])
        window: list[list[int]] = []
        for batch in drawn:
            window.append(batch)
            if len(window) == self.window:
                yield from self._grouped(window, order_rng)
                window = []
        if window:
            yield from self._grouped(window, order_rng)

    def _drawn_batches(self, rng: np.random.Generator):
        cycles = [_ShuffledCycle(n, rng) for n in self.task_sizes]
        total = sum(self.task_sizes)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            size = min(self.batch_size, total - start) if not self.drop_last else self.batch_size
            if self.mixed:
                tasks = rng.choice(len(self.task_sizes), size=size, p=self.probabilities)
            else:
                tasks = np.full(size, rng.choice(len(self.task_sizes), p=self.probabilities))
            yield [int(self.offsets[t] + cycles[t].next()) for t in tasks]

    def _grouped(self, window: list[list[int]], rng: np.random.Generator) -> list[list[int]]:
        """The window's rows, sorted by length and cut into batches of the drawn sizes, in shuffled order."""
        if self.mixed:
            groups = [window]
        else:  # regroup within each task, so every batch stays single-task
            task_of = np.searchsorted(self.offsets, [batch[0] for batch in window], side="right")
            groups = [[b for b, t in zip(window, task_of) if t == task] for task in sorted(set(task_of))]
        batches = []
        for group in groups:
            rows = sorted((row for batch in group for row in batch), key=lambda row: self.lengths[row])
            starts = np.cumsum([0] + [len(batch) for batch in group])
            batches += [rows[a:b] for a, b in zip(starts[:-1], starts[1:])]
        return [batches[i] for i in rng.permutation(len(batches))]


class _ShuffledCycle:
    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.order, self.position = rng.permutation(size), 0

    def next(self) -> int:
        if self.position == self.size:
            self.order, self.position = self.rng.permutation(self.size), 0
        self.position += 1
        return int(self.order[self.position - 1])
