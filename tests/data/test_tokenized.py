"""Training rows on disk (`mtl.data.tokenized`): what the Arrow cache holds is what the reader and the tokenizer give,
the same files and tokenizer come back from the cache without being read again, anything else is built anew, and a
failed build leaves nothing behind."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from mtl.artifacts.publish import remove_stale_staging
from mtl.data import tokenized
from mtl.data.dataset import MultitaskDataset
from mtl.data.tokenized import TokenCache, Tokenization
from mtl.errors import ConfigError, DataError
from tests.factory import build_tokenizer, demo_rows, write_jsonl

NAMES = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("bert")


@pytest.fixture
def rows():
    return demo_rows("ag_news", "train", 40)


def entries(cache: TokenCache, kind: str) -> list[str]:
    return sorted(p.name for p in (cache.folder / kind).iterdir())


def build(cache, path, tokenizer, max_length=32, labels=None, names=NAMES):
    entry = cache.rows(path, "text", "label")
    return entry, cache.tokens(entry, labels or tuple(sorted(entry.first_lines)),
                               Tokenization(tokenizer, max_length, names))


def test_tokens_are_the_tokenizers_ids_and_labels_index_the_given_order(tmp_path, tokenizer, rows):
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    entry = TokenCache(tmp_path / "cache").rows(path, "text", "label")
    assert entry.rows == len(rows)
    assert set(entry.first_lines) == {r["label"] for r in rows}
    labels = tuple(sorted(entry.first_lines, reverse=True))  # any order the task gives
    tokens = TokenCache(tmp_path / "cache").tokens(entry, labels, Tokenization(tokenizer, 16, NAMES))
    expected = tokenizer([r["text"] for r in rows], truncation=True, max_length=16, padding=False)
    assert tokens["input_ids"] == expected["input_ids"]
    assert tokens["attention_mask"] == expected["attention_mask"]
    assert tokens["labels"] == [labels.index(r["label"]) for r in rows]
    np.testing.assert_array_equal(tokenized.row_lengths(tokens), [len(ids) for ids in expected["input_ids"]])


def test_the_same_file_and_tokenizer_come_from_the_cache_without_reading_or_tokenizing(tmp_path, tokenizer, rows,
                                                                                     monkeypatch):
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    first_entry, first = build(TokenCache(tmp_path / "cache"), path, tokenizer)

    def refuse(*args, **kwargs):
        raise AssertionError("read or tokenized again")

    monkeypatch.setattr(tokenized, "checked_examples", refuse)
    monkeypatch.setattr(tokenized._Encode, "__call__", refuse)
    cache = TokenCache(tmp_path / "cache")
    entry, again = build(cache, path, tokenizer)
    assert entry == first_entry and again["input_ids"] == first["input_ids"]
    assert len(entries(cache, "rows")) == len(entries(cache, "tokens")) == 1


def test_changed_content_fields_tokenizer_or_length_build_new_entries(tmp_path, tokenizer, rows):
    cache = TokenCache(tmp_path / "cache")
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    _, base = build(cache, path, tokenizer)
    _, shorter = build(cache, path, tokenizer, max_length=8)
    assert max(map(len, shorter["input_ids"])) == 8 < max(map(len, base["input_ids"]))
    other_tokenizer = build_tokenizer("roberta")
    entry, other = build(cache, path, other_tokenizer, names=("input_ids", "attention_mask"))
    assert other["input_ids"] == other_tokenizer([r["text"] for r in rows], truncation=True, max_length=32)["input_ids"]
    assert len(entries(cache, "rows")) == 1 and len(entries(cache, "tokens")) == 3
    both = write_jsonl(tmp_path / "both.jsonl", [{**r, "title": r["text"][:20]} for r in rows])
    by_title = cache.rows(both, "title", "label")  # the same bytes read by another field: other rows
    assert by_title.key != cache.rows(both, "text", "label").key and by_title.rows == len(rows)
    assert len(entries(cache, "rows")) == 3
    write_jsonl(path, rows[:10])  # same name, other bytes: never the old rows
    entry, fewer = build(cache, path, tokenizer)
    assert entry.rows == 10 and len(fewer) == 10
    assert len(entries(cache, "rows")) == 4


def test_a_bad_row_is_named_by_file_and_line_and_nothing_is_cached(tmp_path, tokenizer, rows):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r) for r in rows[:5]] + ['{"text": "", "label": "x"}'] + [json.dumps(r) for r in rows[5:]]
    path.write_text("\n".join(lines) + "\n")
    cache = TokenCache(tmp_path / "cache")
    with pytest.raises(DataError, match=rf"^{path}:6: field 'text': empty text$"):
        cache.rows(path, "text", "label")
    assert entries(cache, "rows") == []  # no entry, no staging folder


def test_an_entry_being_published_is_not_taken_for_a_killed_runs(tmp_path, tokenizer, rows, monkeypatch):
    """A second run (torchrun's other process) clears stale staging folders as it starts; one that starts just as
    this run renames its entry into place must find a live owner, not remove the folder."""
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    cache = TokenCache(tmp_path / "cache")
    rename = os.rename

    def another_run_starts_first(source, target):
        if Path(target).parent.parent == cache.folder:  # an entry's rename (not one inside datasets)
            remove_stale_staging(Path(target), Path(target).parent)
        rename(source, target)

    monkeypatch.setattr(os, "rename", another_run_starts_first)
    entry, tokens = build(cache, path, tokenizer)
    assert entry.rows == len(tokens) == len(rows)
    assert sorted(p.name for p in (cache.folder / "rows" / entry.key).iterdir()) == ["entry.json", "rows.arrow"]


def test_a_file_that_changes_while_it_is_read_is_refused_and_not_cached(tmp_path, rows, monkeypatch):
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    reader = tokenized.checked_examples

    def appended_while_reading(*args, **kwargs):
        for index, example in enumerate(reader(*args, **kwargs)):
            if index == 1:
                with path.open("a") as handle:
                    handle.write('{"text": "late", "label": "x"}\n')
            yield example

    monkeypatch.setattr(tokenized, "checked_examples", appended_while_reading)
    cache = TokenCache(tmp_path / "cache")
    with pytest.raises(DataError, match=rf"^{path}: it changed while it was being read"):
        cache.rows(path, "text", "label")
    assert entries(cache, "rows") == []


def test_a_cached_validation_file_is_checked_against_the_training_labels_as_reading_would(tmp_path, rows):
    path = write_jsonl(tmp_path / "valid.jsonl", rows)
    cache = TokenCache(tmp_path / "cache")
    labels = tuple(sorted({r["label"] for r in rows}))
    first_line_of = {}
    for line, row in enumerate(rows, start=1):
        first_line_of.setdefault(row["label"], line)
    missing = max(first_line_of, key=first_line_of.get)  # the label met last
    known = tuple(label for label in labels if label != missing)
    message = rf"^{path}:{first_line_of[missing]}: label '{missing}' is not one of the training labels"
    with pytest.raises(DataError, match=message):  # read now
        cache.rows(path, "text", "label", known=known)
    cache.rows(path, "text", "label", known=labels)
    with pytest.raises(DataError, match=message):  # from the cache
        cache.rows(path, "text", "label", known=known)


@pytest.mark.parametrize("damage", ["garbage entry", "other format", "missing shard", "wrong row count"])
def test_a_damaged_entry_is_rebuilt_not_trusted(tmp_path, tokenizer, rows, damage, caplog):
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    cache = TokenCache(tmp_path / "cache")
    _, before = build(cache, path, tokenizer)
    folder = cache.folder / "tokens" / entries(cache, "tokens")[0]
    entry = json.loads((folder / "entry.json").read_text())
    if damage == "garbage entry":
        (folder / "entry.json").write_text("{not json")
    elif damage == "other format":
        (folder / "entry.json").write_text(json.dumps({**entry, "format": 0}))
    elif damage == "missing shard":
        (folder / entry["shards"][0]).unlink()
    else:
        (folder / "entry.json").write_text(json.dumps({**entry, "rows": entry["rows"] + 1}))
    _, after = build(cache, path, tokenizer)
    assert after["input_ids"] == before["input_ids"]
    assert "rebuilding the cached data" in caplog.text


def test_several_processes_tokenize_into_shards_with_the_same_result(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(tokenized, "ROWS_PER_BATCH", 16)
    path = write_jsonl(tmp_path / "train.jsonl", demo_rows("ag_news", "train", 100))
    _, one = build(TokenCache(tmp_path / "one"), path, tokenizer)
    cache = TokenCache(tmp_path / "two", num_proc=2)
    _, two = build(cache, path, tokenizer)
    shards = json.loads((cache.folder / "tokens" / entries(cache, "tokens")[0] / "entry.json").read_text())["shards"]
    assert len(shards) == 2
    assert two["input_ids"] == one["input_ids"] and two["labels"] == one["labels"]


def test_a_stream_is_read_once_into_the_runs_own_entries_removed_at_close(tmp_path, tokenizer, rows):
    fifo = tmp_path / "rows"  # no suffix: JSON Lines by its first line
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: write_jsonl(fifo, rows), daemon=True)
    writer.start()
    cache = TokenCache(tmp_path / "cache")
    entry, tokens = build(cache, fifo, tokenizer)
    writer.join()
    assert entry.rows == len(rows) and len(tokens) == len(rows)
    assert len(entries(cache, "rows")) == len(entries(cache, "tokens")) == 1
    cache.close()
    assert entries(cache, "rows") == entries(cache, "tokens") == []


def test_a_cache_folder_that_cannot_be_made_is_one_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="--data-cache .*file: cannot use it as the tokenized-data cache"):
        TokenCache(tmp_path / "file")


def test_the_dataset_fetches_a_mixed_batch_from_each_task_in_order(tmp_path, tokenizer):
    cache = TokenCache(tmp_path / "cache")
    parts, texts = [], []
    for name in ("ag_news", "tweet_eval_sentiment"):
        task_rows = demo_rows(name, "train", 12)
        _, tokens = build(cache, write_jsonl(tmp_path / f"{name}.jsonl", task_rows), tokenizer)
        parts.append(tokens)
        texts.append([r["text"] for r in task_rows])
    dataset = MultitaskDataset(parts, [1, 0])  # the parts' task indices in the model
    assert len(dataset) == 24 and dataset.task_sizes == [12, 12]
    indices = [13, 2, 23, 0, 12]
    items = dataset.__getitems__(indices)
    for index, item in zip(indices, items):
        part, row = divmod(index, 12)
        assert item["task_ids"] == [1, 0][part]
        assert item["input_ids"] == tokenizer(texts[part][row], truncation=True, max_length=32)["input_ids"]
        assert dataset.lengths[index] == len(item["input_ids"])
    assert dataset[13] == items[0]
    with pytest.raises(IndexError):
        dataset.__getitems__([24])
