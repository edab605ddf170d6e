"""`mtl-onnx predict --engine ray` through Typer's runner on a real local Ray of 2 CPUs (the command keeps a Ray
session its process already runs): several files and formats, folders, globs and a file:// URI; bad rows as
error records in place; the Parquet round trip against single-process predictions; the JSON Lines shards against
local `predict`'s lines; what is refused before any work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.cli import app
from tests.factory import demo_texts
from tests.scale.conftest import PRECISION, assert_same_predictions, single_process

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Five inputs in four formats with known bad rows, and every row as (text or None, expected error start)."""
    folder = tmp_path_factory.mktemp("corpus")
    texts = demo_texts(400)
    expected: list[tuple[str | None, str | None]] = []

    def good(text):
        expected.append((text, None))
        return text

    (folder / "inputs").mkdir()
    lines = [good(t) for t in texts[:150]]
    lines[40] = ""
    expected[40] = (None, "inputs/a.txt:41: empty text")
    (folder / "inputs" / "a.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = [json.dumps({"text": good(t), "id": f"b{i}"}) for i, t in enumerate(texts[150:250])]
    records[3] = "{not json"
    expected[153] = (None, "inputs/b.jsonl:4: not valid JSON")
    records[9] = json.dumps({"text": 17, "id": "b9"})
    expected[159] = (None, "inputs/b.jsonl:10: field 'text': must be a string, got int")
    (folder / "inputs" / "b.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (folder / "inputs" / "_SUCCESS").write_text("")  # skipped in a folder, as Spark and pyarrow skip it
    rows = [good(t) for t in texts[250:300]]
    rows[5] = "\u200b"
    expected[255] = (None, "c.csv:7: field 'text': empty text")
    write_table(folder / "c.csv", ["text", "id"], [(t, f"c{i}") for i, t in enumerate(rows)], ",")
    write_table(folder / "d.tsv", ["id", "text"], [(f"d{i}", good(t)) for i, t in enumerate(texts[300:340])], "\t")
    column = [good(t) for t in texts[340:400]]
    column[0] = None
    expected[340] = (None, "e.parquet: row 1: missing field 'text'")
    pq.write_table(pa.table({"text": column, "id": [f"e{i}" for i in range(60)]}), folder / "e.parquet",
                   row_group_size=16)
    return folder, expected


def write_table(path: Path, header: list[str], rows: list[tuple], delimiter: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def inputs(folder: Path) -> list[str]:
    """A folder as a file:// URI (read as s3:// is), a path, a glob and a path: in this order, rows 0-249, 250-299,
    300-339, 340-399."""
    return ["--file", f"file://{folder / 'inputs'}", "--file", folder / "c.csv", "--file", f"{folder}/d.t?v",
            "--file", folder / "e.parquet"]


def test_parquet_round_trip_every_row_once_in_order_with_single_process_labels(tiny, local_ray, corpus, tmp_path):
    folder, expected = corpus
    export = tiny.export("bert")
    out = tmp_path / "predictions"
    result = invoke("predict", export, *inputs(folder), "--engine", "ray", "--output", out, "--precision", PRECISION,
                    "--batch-size", "16")
    assert result.exit_code == 1, result.output  # rows with an error: every row is written, then exit 1
    assert "400 rows (5 with an error)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == 'error: 5 of 400 rows could not be classified (see their "error")'
    assert (out / "_SUCCESS").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name != "predictions"]  # no staging or lock left beside it

    table = pq.read_table(out)  # pyarrow skips _SUCCESS
    rows = sorted(table.to_pylist(), key=lambda row: row["row"])
    assert [row["row"] for row in rows] == list(range(400))
    good = [i for i, (text, _) in enumerate(expected) if text is not None]
    want = dict(zip(good, single_process(export, [expected[i][0] for i in good])))
    for i, row in enumerate(rows):
        text, error = expected[i]
        if error is not None:
            assert row["predictions"] is None and error in row["error"], (i, row["error"])
        else:
            assert row["error"] is None and row["text"] == text
            assert_same_predictions({t: {**p, "probabilities": dict(p["probabilities"])}
                                     for t, p in row["predictions"].items()}, want[i])


def test_jsonl_shards_hold_local_predicts_records_with_the_id(tiny, local_ray, corpus, tmp_path):
    folder, expected = corpus
    export = tiny.export("bert")
    files = ["--file", folder / "inputs" / "b.jsonl", "--file", folder / "c.csv"]  # local predict reads no Parquet
    out = tmp_path / "predictions"
    result = invoke("predict", export, *files, "--engine", "ray", "--output", out, "--output-format", "jsonl",
                    "--id-field", "id", "--precision", PRECISION, "--actors", "1", "--threads-per-actor", "2")
    assert result.exit_code == 1, result.output
    got = sorted((json.loads(line) for shard in sorted(out.glob("part-*.jsonl")) for line in
                  shard.read_text(encoding="utf-8").splitlines()), key=lambda record: record["row"])
    local = invoke("predict", export, *files, "--precision", PRECISION, "--threads", "1")
    want = [json.loads(line) for line in local.stdout.splitlines()]
    assert len(got) == len(want) == 150
    for i, (record, line) in enumerate(zip(got, want)):
        assert record["row"] == i
        assert list(record)[:3] == ["row", "id", "text"]
        assert record["id"] == (None if i == 3 else f"b{i}" if i < 100 else f"c{i - 100}")  # line 4 is not JSON
        assert record["text"] == line["text"]
        assert ("error" in record) == ("error" in line)
        if "error" in line:
            assert record["error"] == line["error"]
        else:
            assert_same_predictions(record["predictions"], line["predictions"])


def test_a_second_run_needs_overwrite_and_replaces_only_its_own_kind(tiny, local_ray, corpus, tmp_path):
    folder, _ = corpus
    out = tmp_path / "predictions"
    args = ["predict", tiny.export("bert"), "--file", folder / "d.tsv", "--engine", "ray", "--output", out,
            "--precision", PRECISION]
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert_one_line_error(again, "already holds an mtl-onnx prediction folder; pass --overwrite to replace it")
    assert invoke(*args, "--overwrite").exit_code == 0
    assert pq.read_table(out).num_rows == 40
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = invoke(*args[:-4], "--output", foreign, "--precision", PRECISION, "--overwrite")
    assert_one_line_error(refused, "holds no mtl-onnx prediction folder; choose another output folder")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("extra, fragment", [
    (["--output", "OUT", "--engine", "local"], "--output is an option of --engine ray"),
    (["--engine", "ray"], "--engine ray writes a folder of shards: give it with --output DIR"),
    (["--engine", "ray", "--output", "OUT", "--threads", "2"], "--threads and --device are the local engine's"),
    (["--engine", "ray", "--output", "OUT", "--task", "color"], "unknown task 'color'; valid: topic, sentiment"),
    (["--engine", "ray", "--output", "OUT", "--text-field", "body"], "e.parquet: no column 'body'"),
    (["--engine", "ray", "--output", "OUT", "--id-field", "id", "--file", "a.txt"], "plain text has no fields"),
    (["--engine", "ray", "--output", "OUT", "--file", "missing/*.jsonl"], "no file matches this pattern"),
    (["--engine", "ray", "--output", "OUT", "--file", "-"], "-: --engine ray reads regular files"),
])
def test_mistakes_are_one_line_before_any_work(tiny, local_ray, corpus, tmp_path, extra, fragment):
    folder, _ = corpus
    extra = [str(tmp_path / "out") if a == "OUT" else str(folder / "inputs" / a) if a == "a.txt" else
             str(tmp_path / a) if a.startswith("missing") else a for a in extra]
    result = invoke("predict", tiny.export("bert"), "--file", folder / "e.parquet", "--precision", PRECISION, *extra)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


def assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("asked, actors, address, expected", [
    (3, None, None, 3),  # as asked, always
    (None, None, None, "cores"),  # a local Ray: one actor with every core, as local predict runs
    (None, 2, None, 1),  # an actor count given: each takes one CPU
    (None, None, "127.0.0.1:6379", 1),  # a cluster of unknown node sizes: one CPU always fits
])
def test_threads_per_actor_default(asked, actors, address, expected):
    from mtl.artifacts.environment import usable_cores
    from mtl.scale.job import JobOptions, actor_threads

    options = JobOptions(Path("onnx"), actors=actors, threads_per_actor=asked, address=address)
    assert actor_threads(options) == (usable_cores() if expected == "cores" else expected)
