"""`mtl-onnx predict` streams: results for the first chunk come out before the input has ended."""

import json
import subprocess
import sys


def test_predict_writes_results_before_stdin_ends(tiny):
    export = tiny.export("bert", precisions=("fp32",), optimize=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "mtl.cli", "predict", str(export), "--file", "-", "--batch-size", "8"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # One chunk is max(1024, 16 x batch) rows: send a bit more, keep stdin open, and read what is out.
        process.stdin.write("".join(f"text number {i}\n" for i in range(1100)))
        process.stdin.flush()
        first = [json.loads(process.stdout.readline()) for _ in range(1024)]
        assert [row["text"] for row in first] == [f"text number {i}" for i in range(1024)]
        assert all("predictions" in row for row in first)
        process.stdin.write("\nlast one\n")  # an empty row gets an error record, and the exit code says so
        process.stdin.close()
        rest = [json.loads(line) for line in process.stdout.read().splitlines()]
    finally:
        process.kill() if process.poll() is None else None
    assert process.wait(timeout=60) == 1
    assert len(rest) == 1100 - 1024 + 2
    assert rest[-2] == {"text": "", "error": "-:1101: empty text"} and rest[-1]["text"] == "last one"
    assert "1 of 1102 rows could not be classified" in process.stderr.read()
