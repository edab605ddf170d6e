"""Data never reaches a terminal as control characters: labels, task names, texts and paths in error lines, log
lines and tables are escaped once, at the printing boundary (`mtl.text.printable`), so a file or folder cannot move
the cursor, recolour or retitle the terminal, hide text or reorder it (bidi overrides). JSON output is data, and
JSON escaping already covers it."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from mtl.cli import app
from mtl.cli.options import user_errors
from mtl.cli.tables import metrics_table
from mtl.errors import DataError
from mtl.text import printable_json

HOSTILE = "\x1b[2J\x1b]0;owned\x07 \r\x08 \u202etxt.exe \u2066 \x9b31m"
RAW = ("\x1b", "\x07", "\r", "\x08", "\u202e", "\u2066", "\x9b")


def assert_escaped(output: str) -> None:
    assert not any(char in output for char in RAW), repr(output)
    assert "\\x1b" in output and "\\u202e" in output


def test_an_error_line_shows_data_escaped(capsys):
    with pytest.raises(typer.Exit), user_errors():
        raise DataError(f"data.jsonl:3: label {HOSTILE} is [bold]not known[/bold]")
    err = capsys.readouterr().err
    assert_escaped(err)
    assert "[bold]not known[/bold]" in err  # and no markup of the data is obeyed
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_a_path_from_the_command_line_is_escaped_in_its_error(tiny, tmp_path):
    export = tiny.export("bert", precisions=("fp32",), optimize=False)
    result = CliRunner().invoke(app, ["predict", str(export), "--file", str(tmp_path / f"{HOSTILE}.txt")])
    assert result.exit_code == 1 and "file not found" in result.stderr
    assert_escaped(result.stderr)


def test_a_label_in_a_data_file_is_escaped_in_its_error(tiny, tmp_path):
    data = tmp_path / "valid.jsonl"
    data.write_text(json.dumps({"text": "Stocks rallied.", "label": HOSTILE}) + "\n", encoding="utf-8")
    export = tiny.export("bert", precisions=("fp32",), optimize=False)
    result = CliRunner().invoke(app, ["evaluate", str(export), "--task", f"topic={data}"])
    assert result.exit_code == 1 and "holds the control character U+001B" in result.stderr
    assert_escaped(result.stderr)


def test_a_log_line_shows_data_escaped():
    code = ("import logging; from mtl.cli.options import setup_logging; setup_logging(torch_side=False); "
            f"logging.getLogger('mtl.data').warning('labels %s differ', {HOSTILE!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "labels" in result.stderr
    assert_escaped(result.stderr)


def test_a_metrics_table_shows_titles_and_task_names_escaped():
    output = io.StringIO()
    table = metrics_table(f"model {HOSTILE} [red]", {f"task{HOSTILE}": {"accuracy": 1.0, "macro_f1": 0.5,
                                                                          "macro_recall": 0.5}})
    Console(file=output, width=400, color_system=None).print(table)
    assert_escaped(output.getvalue())
    assert "[red]" in output.getvalue()


def test_predict_json_output_keeps_the_text_as_data_and_escapes_it(tiny):
    export = tiny.export("bert", precisions=("fp32",), optimize=False)
    result = CliRunner().invoke(app, ["predict", str(export), f"a text {HOSTILE}"])
    assert result.exit_code == 0, result.output
    assert not any(char in result.stdout for char in RAW)
    assert json.loads(result.stdout)["text"] == f"a text {HOSTILE}"


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.text(), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner,
                                                                                            max_size=3)))
def test_printable_json_is_the_same_data_and_printable(value):
    line = printable_json(json.dumps(value, ensure_ascii=False))
    assert line.isprintable() and json.loads(line) == value
