from collections import Counter

import numpy as np
import pytest
import torch

from mtl.data.dataset import PaddingCollator, TaskBatchSampler, task_probabilities


def test_task_probabilities():
    sizes = [100, 900]
    np.testing.assert_allclose(task_probabilities(sizes, "uniform"), [0.5, 0.5])
    np.testing.assert_allclose(task_probabilities(sizes, "proportional"), [0.1, 0.9])
    np.testing.assert_allclose(task_probabilities(sizes, "temperature", 2.0), [10 / 40, 30 / 40])
    np.testing.assert_allclose(task_probabilities(sizes, "temperature", 1.0), [0.1, 0.9])


def task_of(index, sizes):
    return int(np.searchsorted(np.cumsum(sizes), index, side="right"))


@pytest.mark.parametrize("mode", ["uniform", "proportional", "temperature"])
def test_mixed_batches_draw_tasks_at_the_configured_rate(mode):
    sizes = [300, 2700]
    sampler = TaskBatchSampler(sizes, 16, task_probabilities(sizes, mode, 2.0), mixed=True, seed=1)
    counts = Counter(task_of(i, sizes) for epoch in range(3) for batch in (sampler.set_epoch(epoch), list(sampler))[1]
                     for i in batch)
    share = counts[0] / sum(counts.values())
    expected = task_probabilities(sizes, mode, 2.0)[0]
    assert abs(share - expected) < 0.02, (mode, share, expected)
    assert len(sampler) == 3000 // 16 + 1


def test_batches_mix_tasks_by_default_and_can_be_single_task():
    sizes = [50, 50]
    mixed = list(TaskBatchSampler(sizes, 10, task_probabilities(sizes, "uniform"), mixed=True, seed=0))
    single = list(TaskBatchSampler(sizes, 10, task_probabilities(sizes, "uniform"), mixed=False, seed=0))
    assert any(len({task_of(i, sizes) for i in batch}) == 2 for batch in mixed)
    assert all(len({task_of(i, sizes) for i in batch}) == 1 for batch in single)
    assert sum(len(b) for b in single) == 100


def test_proportional_sampling_cycles_through_each_task_without_repeats():
    sizes = [40]
    batches = list(TaskBatchSampler(sizes, 8, np.array([1.0]), seed=3))
    assert sorted(i for b in batches for i in b) == list(range(40))


def test_order_depends_on_seed_and_epoch_only():
    sizes = [30, 30]
    probs = task_probabilities(sizes, "uniform")
    a, b = TaskBatchSampler(sizes, 4, probs, seed=5), TaskBatchSampler(sizes, 4, probs, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(0)
    assert list(a) != list(b)


def test_collator_pads_to_the_longest_row_and_masks_padding():
    items = [
        {"input_ids": [2, 7, 3], "attention_mask": [1, 1, 1], "labels": 1, "task_ids": 0},
        {"input_ids": [2, 3], "attention_mask": [1, 1], "labels": 0, "task_ids": 1},
    ]
    batch = PaddingCollator(pad_token_id=9)(items)
    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].dtype == torch.long and batch["task_ids"].tolist() == [0, 1]
