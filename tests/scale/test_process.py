"""`mtl-onnx predict --engine ray` as a user runs it, in its own process with its own local Ray: interrupted mid-run
it leaves nothing that looks complete; and the base install's paths (the runtime, local predict) never import ray
or pyarrow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.scale.conftest import PRECISION

ray = pytest.importorskip("ray")


def test_the_runtime_and_local_predict_never_import_ray(tiny):
    code = textwrap.dedent(f"""
        import sys
        import mtl.runtime
        from mtl.runtime.predictor import Predictor
        from mtl.cli import app
        try:
            app(["predict", {str(tiny.export("bert"))!r}, "the movie was great", "--precision", "fp32"])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(sorted(m for m in ("ray", "pyarrow") if m in sys.modules), file=sys.stderr)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[]"
    assert "predictions" in json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_publishes_nothing(tiny, tmp_path, signum):
    source = tmp_path / "texts.txt"
    source.write_text("".join(f"Stocks rallied on day {i} as the team won the match.\n" for i in range(300_000)))
    target = tmp_path / "out" / "predictions"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([sys.executable, "-m", "mtl.cli", "predict", str(tiny.export("bert")), "--file",
                                str(source), "--engine", "ray", "--output", str(target), "--precision", PRECISION],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert _first_shard(target.parent, process, timeout=240), "no shard was written before the deadline"
        process.send_signal(signum)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read().decode()
    assert code == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not target.exists()
    assert not list(tmp_path.rglob("_SUCCESS"))
    assert not target.parent.exists()  # the staging folder, the claim and the folder made for them are gone too


def _first_shard(folder, process, timeout: float) -> bool:
    """Wait until the run is under way: a shard in its staging folder (rows predicted, more to come)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if list(folder.glob(".predictions.*.staging/part-*")):
            return True
        time.sleep(0.2)
    return False


def test_an_address_where_no_cluster_answers_is_one_line_at_once(tiny, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("a text\n")
    done = subprocess.run([sys.executable, "-m", "mtl.cli", "predict", str(tiny.export("bert")), "--file", str(source),
                           "--engine", "ray", "--output", str(tmp_path / "out"), "--address", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)  # Ray itself would retry for minutes
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: --address 127.0.0.1:1: no Ray cluster answers there (Connection refused); start one with `ray start "
        "--head --port=1` or give its head's address"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]
