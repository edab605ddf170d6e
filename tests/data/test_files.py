import pytest

from mtl.data.files import TaskFiles, demo_task_files, label_set, read_examples
from mtl.errors import ConfigError, DataError


def write(path, content):
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_reads_jsonl_csv_and_tsv(tmp_path):
    jsonl = write(tmp_path / "a.jsonl", '{"text": "hello", "label": "x"}\n\n{"text": "bye", "label": 2}\n')
    csv = write(tmp_path / "a.csv", 'body,tag\n"hi, there",y\n')
    tsv = write(tmp_path / "a.tsv", "text\tlabel\nhey\tz\n")
    assert [(e.text, e.label, e.line) for e in read_examples(jsonl)] == [("hello", "x", 1), ("bye", "2", 3)]
    assert [(e.text, e.label) for e in read_examples(csv, "body", "tag")] == [("hi, there", "y")]
    assert [(e.text, e.label) for e in read_examples(tsv)] == [("hey", "z")]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", "", r"empty.jsonl: no examples \(the file is empty\)"),
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": oops}\n', r"bad.jsonl:2: not valid JSON"),
        ("list.jsonl", "[1, 2]\n", r"list.jsonl:1: expected a JSON object, got list"),
        ("notext.jsonl", '{"body": "a", "label": "x"}\n',
         r"notext.jsonl:1: missing field 'text' \(fields present: body, label\)"),
        ("nolabel.jsonl", '{"text": "a"}\n', r"nolabel.jsonl:1: missing field 'label'"),
        ("blank.jsonl", '{"text": "a", "label": "x"}\n{"text": "  ", "label": "x"}\n',
         r"blank.jsonl:2: field 'text': empty text"),
        ("bad.csv", "text,label\nhello,\n", r"bad.csv:2: label '': empty"),
        ("data.parquet", "x", r"unknown file type '.parquet'; valid: .jsonl"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message):
        read_examples(write(tmp_path / name, content))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_examples(tmp_path / "nope.jsonl")


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = write(tmp_path / "latin.jsonl", b'{"text": "ok", "label": "x"}\n{"text": "caf\xe9", "label": "x"}\n')
    with pytest.raises(DataError, match=r"latin.jsonl:2: not valid UTF-8 \(byte 0xe9\)"):
        read_examples(path)


def test_label_set_is_sorted_and_unknown_validation_labels_are_refused(tmp_path):
    train = read_examples(write(tmp_path / "t.jsonl", '{"text": "a", "label": "b"}\n{"text": "c", "label": "a"}\n'))
    assert label_set(e.label for e in train) == ("a", "b")
    valid_path = write(tmp_path / "v.jsonl", '{"text": "a", "label": "a"}\n{"text": "z", "label": "zz"}\n')
    with pytest.raises(DataError, match=r"v.jsonl:2: label 'zz' is not one of the training labels \(a, b\)"):
        read_examples(valid_path, labels=("a", "b"))


def test_task_spec_parsing():
    assert TaskFiles.parse("topic=a.jsonl,b.jsonl").validation.name == "b.jsonl"
    assert TaskFiles.parse("topic=a.jsonl").validation is None
    for bad in ("topic", "=a.jsonl", "topic=", "t=a,b,c"):
        with pytest.raises(ConfigError, match="expected NAME=TRAIN_FILE"):
            TaskFiles.parse(bad)


def test_bundled_demo_data_is_complete():
    files = demo_task_files()
    assert [f.name for f in files] == ["topic", "sentiment"]
    expected = {"topic": ("Business", "Sci/Tech", "Sports", "World"), "sentiment": ("negative", "neutral", "positive")}
    for f in files:
        train = read_examples(f.train)
        assert label_set(e.label for e in train) == expected[f.name]
        valid = read_examples(f.validation, labels=label_set(e.label for e in train))
        assert len(train) == 2000 and len(valid) == 500
