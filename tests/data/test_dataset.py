from collections import Counter

import numpy as np
import pytest
import torch

from mtl.data.dataset import PaddingCollator, TaskBatchSampler, task_probabilities
from mtl.errors import ConfigError


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


def _real_token_share(batches, lengths) -> float:
    real = sum(lengths[i] for batch in batches for i in batch)
    return real / sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


@pytest.mark.parametrize("mixed", [True, False])
def test_length_grouping_keeps_the_drawn_rows_and_cuts_padding(mixed):
    sizes = [300, 500]
    lengths = list(np.random.default_rng(0).integers(5, 120, sum(sizes)))
    probabilities = task_probabilities(sizes, "temperature", 2.0)
    plain = list(TaskBatchSampler(sizes, 16, probabilities, mixed=mixed, seed=3))
    grouped = list(TaskBatchSampler(sizes, 16, probabilities, mixed=mixed, seed=3, lengths=lengths, window=10))
    # The same rows, so the same task mix, in batches of the same sizes; only how they are cut changes.
    assert Counter(i for b in grouped for i in b) == Counter(i for b in plain for i in b)
    assert sorted(map(len, grouped)) == sorted(map(len, plain))
    assert _real_token_share(grouped, lengths) > _real_token_share(plain, lengths) + 0.2
    if not mixed:
        assert all(len({i >= sizes[0] for i in batch}) == 1 for batch in grouped)


def test_length_grouping_sorts_within_a_window_and_shuffles_the_batches():
    sizes, window = [640], 5
    lengths = list(np.random.default_rng(1).permutation(640))
    probabilities = task_probabilities(sizes, "proportional")
    plain = list(TaskBatchSampler(sizes, 16, probabilities, seed=0))
    grouped = list(TaskBatchSampler(sizes, 16, probabilities, seed=0, lengths=lengths, window=window))
    for start in range(0, len(plain), window):
        drawn = sorted((i for b in plain[start:start + window] for i in b), key=lengths.__getitem__)
        cut = [drawn[k:k + 16] for k in range(0, len(drawn), 16)]
        # Each window's batches are its sorted rows cut in order, in some order of batches.
        assert sorted(grouped[start:start + window]) == sorted(cut)
    firsts = [lengths[b[0]] for b in grouped]
    assert firsts != sorted(firsts)  # not one long ascending run


def test_length_grouping_depends_on_seed_and_epoch_only():
    sizes, lengths = [50, 70], list(range(120))
    first, second = (TaskBatchSampler(sizes, 8, task_probabilities(sizes, "uniform"), seed=9, lengths=lengths)
                     for _ in range(2))
    assert list(first) == list(second)
    second.set_epoch(1)
    assert list(first) != list(second)


@pytest.mark.parametrize("kwargs, message", [
    ({"lengths": [3] * 5}, "5 lengths for 10 rows"),
    ({"lengths": [3] * 10, "window": 0}, "window must be at least 1"),
])
def test_length_grouping_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TaskBatchSampler([4, 6], 2, task_probabilities([4, 6], "uniform"), **kwargs)
