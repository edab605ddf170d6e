"""`predict` writing into a slow pipe and interrupted there, or writing into a pipe closed early: the output ends
at a line end (every line is whole JSON), and the exit is one line with a non-zero code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


def start_predict(export, source) -> subprocess.Popen:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    # --precision fp32: "auto" would warn on stderr that the factory export's int8 was never checked on labelled data
    return subprocess.Popen([sys.executable, "-m", "mtl.cli", "predict", str(export), "--file", str(source),
                             "--threads", "1", "--precision", "fp32"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)


@pytest.fixture
def many_texts(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("".join(f"Stocks rallied on day {i} as the team won the match.\n" for i in range(30_000)))
    return path


@pytest.mark.slow
def test_ctrl_c_while_the_reader_is_slow_leaves_only_whole_lines(tiny, many_texts):
    process = start_predict(tiny.export("bert"), many_texts)
    first = process.stdout.readline()  # the first chunk is out; the next ones fill the pipe and block
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    rest = process.stdout.read()  # the reader catches up only now
    code = process.wait(timeout=60)
    stderr = process.stderr.read().decode()
    output = first + rest
    assert code == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert output.endswith(b"\n")
    lines = output.decode().splitlines()
    assert 0 < len(lines) < 30_000
    for line in lines:
        assert "predictions" in json.loads(line)


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_in_one_line(tiny, many_texts):
    process = start_predict(tiny.export("bert"), many_texts)
    process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    code = process.wait(timeout=120)
    stderr = process.stderr.read().decode()
    assert code == 1
    assert [line for line in stderr.splitlines() if line.strip()] == [  # what it ran on, then the one error
        next(line for line in stderr.splitlines() if line.startswith("running on CPUExecutionProvider: ")),
        next(line for line in stderr.splitlines() if line.startswith("error: the output was closed after"))]
