"""`mtl-onnx predict` on input as users give it: a stream gets each result as soon as its line is in (not after a
chunk of 1,024 lines or the end of the input), stdin can be declared JSON Lines or CSV, FIFOs and process
substitutions are read like files, and N rows in give N rows out whatever the line ends and the encoding."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.cli import app

ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def export(tiny) -> Path:
    return tiny.export("bert", precisions=("fp32",), optimize=False)


def predict_command(export: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mtl.cli", "predict", str(export), "--threads", "1", *args]


def read_line_within(process: subprocess.Popen, seconds: float) -> str:
    """One line of the process's stdout, or fail if none arrives in `seconds` (generous: this is not a timing)."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=seconds), "no result while the input stayed open"
    return process.stdout.readline()


def test_a_stream_gets_each_result_while_its_input_stays_open(export):
    process = subprocess.Popen(predict_command(export, "--file", "-"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV, bufsize=1)
    try:
        for text in ("the first log line", "a second one, later"):
            process.stdin.write(text + "\n")
            process.stdin.flush()
            record = json.loads(read_line_within(process, 60))  # stdin is still open: no end of input yet
            assert record["text"] == text and "predictions" in record
        process.stdin.close()
        assert process.stdout.read() == "" and process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("stdin, args", [
    ('{"text": "Stocks rallied."}\r\n{"text": "The team won."}\r\n', ["--format", "jsonl"]),
    ('{"text": "Stocks rallied."}\n\n{"text": "The team won."}\n', []),  # first line starts with '{': JSON Lines
    ("text,id\r\"Stocks rallied.\",1\r\"The team won.\",2\r", ["--format", "csv"]),
    ("id\ttext\n1\tStocks rallied.\n2\tThe team won.\n", ["--format", "tsv"]),
    ("Stocks rallied.\rThe team won.\r", []),  # old-Mac line ends: two texts, two rows
], ids=["jsonl", "jsonl-sniffed", "csv-cr", "tsv", "txt-cr"])
def test_stdin_is_read_in_the_format_declared_or_shown(export, stdin, args):
    result = CliRunner().invoke(app, ["predict", str(export), "--file", "-", *args], input=stdin)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["Stocks rallied.", "The team won."]


def test_a_text_starting_with_a_brace_can_be_declared_plain_text(export):
    result = CliRunner().invoke(app, ["predict", str(export), "--file", "-", "--format", "txt"],
                                input="{not json} but a text\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == "{not json} but a text"


def test_an_unknown_format_is_refused_by_the_option(export):
    result = CliRunner().invoke(app, ["predict", str(export), "--file", "-", "--format", "xml"], input="a\n")
    assert result.exit_code == 2 and "'txt', 'jsonl', 'csv', 'tsv'" in result.stderr


def test_utf16_cr_and_binary_rows_keep_n_rows_in_n_rows_out(export, tmp_path):
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("Stocks rallied.\r\ncafé au lait\r\n".encode("utf-16"))
    binary = tmp_path / "mixed.txt"
    binary.write_bytes(b"The team won.\r\x00\x00\x00\r\xe2\x80\x8b\rNASA launched a probe.\r")
    result = CliRunner().invoke(app, ["predict", str(export), "--file", str(utf16), "--file", str(binary)])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["Stocks rallied.", "café au lait", "The team won.", "\x00\x00\x00",
                                            "\u200b", "NASA launched a probe."]
    assert rows[3]["error"].startswith(f"{binary}:2: holds NUL characters")
    assert rows[4]["error"] == f"{binary}:3: empty text (only invisible or control characters)"
    assert all("predictions" in rows[i] for i in (0, 1, 2, 5))
    assert result.exit_code == 1 and "2 of 6 rows could not be classified" in result.stderr


def test_a_fifo_and_a_process_substitution_are_read_like_files(export, tmp_path):
    fifo = tmp_path / "texts.jsonl"
    os.mkfifo(fifo)

    def writer():
        with open(fifo, "w", encoding="utf-8") as handle:
            handle.write('{"text": "from a fifo"}\n')

    threading.Thread(target=writer, daemon=True).start()
    command = " ".join(predict_command(export, "--file", str(fifo), "--file", "<(printf 'from a process\\r')"))
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["from a fifo", "from a process"]
