"""Labels a person cannot tell apart never train as silent separate classes: labels that differ only by Unicode
normal form or invisible characters, invisible labels and labels holding control characters are refused by name
(file, line, both labels escaped) where data is read, and where a config or manifest is loaded. And `printable`,
the one terminal escaper, leaves nothing of data that a terminal would act on."""

from __future__ import annotations

import json
import logging
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.config import ModelConfig, TaskSpec
from mtl.data.files import label_set, read_examples
from mtl.errors import ConfigError, DataError
from mtl.text import look_alike_pairs, printable

NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
# (a pair of labels that look the same, the escaped forms the message shows)
LOOK_ALIKES = [
    ((NFC, NFD), ("'caf\\xe9'", "'cafe\\u0301'")),
    (("Sports", "Sports\u200b"), ("'Sports'", "'Sports\\u200b'")),
    (("World", "\ufeffWorld"), ("'World'", "'\\ufeffWorld'")),
    (("ok", "o\u2060k"), ("'ok'", "'o\\u2060k'")),
]


def write_rows(path, rows):
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": label}) + "\n" for i, label in enumerate(rows)),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("labels, shown", LOOK_ALIKES, ids=["nfc-nfd", "zero-width-space", "bom", "word-joiner"])
def test_look_alike_labels_in_a_file_are_refused_naming_lines_and_both_labels(tmp_path, labels, shown):
    path = write_rows(tmp_path / "train.jsonl", [labels[0], "other", labels[1]])
    with pytest.raises(DataError) as caught:
        read_examples(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ") and "(line 1:" in message
    assert shown[0] in message and shown[1] in message
    assert message.isprintable()  # the difference shows as escapes, nothing invisible is printed


@pytest.mark.parametrize("labels, shown", LOOK_ALIKES[:2], ids=["nfc-nfd", "zero-width-space"])
def test_a_validation_label_that_looks_like_a_training_label_is_named_as_such(tmp_path, labels, shown):
    validation = write_rows(tmp_path / "valid.jsonl", ["other", labels[1]])
    with pytest.raises(DataError, match="look the same but are different strings") as caught:
        read_examples(validation, labels=(labels[0], "other"))
    assert str(caught.value).startswith(f"{tmp_path / 'valid.jsonl'}:2: ") and shown[1] in str(caught.value)


@pytest.mark.parametrize("label, fragment", [
    ("\u200b", "is empty or invisible"),
    ("\u200b\u200d\u2060", "is empty or invisible"),
    ("\x1b[31mred", "holds the control character U+001B"),
    ("a\rb", "holds the control character U+000D"),
    ("evil\u202eliam.exe", "holds the control character U+202E"),
    ("\x07bell", "holds the control character U+0007"),
    ("two\u2028lines", "holds the control character U+2028"),
])
def test_invisible_and_control_character_labels_are_refused_by_line(tmp_path, label, fragment):
    path = write_rows(tmp_path / "l.jsonl", ["fine", label])
    with pytest.raises(DataError, match=re.escape(fragment)) as caught:
        read_examples(path)
    assert str(caught.value).startswith(f"{path}:2: label ")
    assert str(caught.value).isprintable()
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        TaskSpec("topic", ("fine", label))


@pytest.mark.parametrize("labels", [pair for pair, _ in LOOK_ALIKES])
def test_a_config_or_manifest_with_look_alike_labels_is_refused_at_load(labels):
    data = ModelConfig((TaskSpec("topic", ("a", "b")),)).to_dict()
    data["tasks"][0]["labels"] = [labels[0], labels[1]]
    with pytest.raises(ConfigError, match="look the same but are different strings"):
        ModelConfig.from_dict(data)


def test_emoji_and_scripts_that_need_joiners_stay_valid_labels():
    family, persian = "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert TaskSpec("t", (family, persian, "\U0001f468")).labels == (family, persian, "\U0001f468")


def test_task_names_that_differ_only_by_case_are_refused():
    with pytest.raises(ConfigError, match="differ only by case"):
        ModelConfig((TaskSpec("Topic", ("a", "b")), TaskSpec("topic", ("a", "b"))))


def test_labels_differing_by_width_or_inner_space_are_warned_about_by_name(tmp_path, caplog):
    path = write_rows(tmp_path / "w.jsonl", ["Ｗｏｒｌｄ", "World", "new  york", "New York", "Sports"])
    with caplog.at_level(logging.WARNING, logger="mtl"):
        labels = label_set(e.label for e in read_examples(path))
    assert len(labels) == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and not any("Sports" in w for w in warnings)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_printable_leaves_nothing_a_terminal_acts_on(text):
    shown = printable(text)
    assert shown.isprintable()
    assert not any(char in shown for char in "\x1b\r\n\x07\x08\u202e\u2066")
    if text.isprintable():
        assert shown == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=4), min_size=2, max_size=6, unique=True))
def test_look_alike_pairs_are_exactly_the_labels_with_one_visible_form(labels):
    pairs = look_alike_pairs(labels)
    keys = [unicodedata.normalize("NFC", "".join(c for c in unicodedata.normalize("NFC", label)
                                                  if unicodedata.category(c) != "Cf")) for label in labels]
    assert bool(pairs) == (len(set(keys)) < len(keys))
