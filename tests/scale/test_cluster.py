"""`mtl-onnx predict --engine ray --address` on a real two-node Ray cluster on this machine: a head and a worker
node on loopback, one CPU each, so two actors of one CPU can only run with one on each node. Every row comes back
once with single-process labels. The test stops the cluster it started: the processes whose command line names
its own temporary folder, and their children (never every Ray process on the machine, as `ray stop` would)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.factory import demo_texts
from tests.scale.conftest import PRECISION, assert_same_predictions, single_process

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.mark.slow
def test_a_two_node_cluster_gives_every_row_once_with_single_process_labels(tiny, tmp_path):
    texts = demo_texts(400)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:250]),
                                      encoding="utf-8")
    pq.write_table(pa.table({"text": texts[250:]}), tmp_path / "b.parquet", row_group_size=50)
    out = tmp_path / "predictions"
    with two_node_cluster() as (address, env):
        assert _cluster_cpus(address, env, want="0.0/2.0 CPU"), "the worker node did not join"  # 1 CPU a node
        run = subprocess.run([sys.executable, "-m", "mtl.cli", "predict", str(tiny.export("bert")), "--file",
                              str(tmp_path / "a.jsonl"), "--file", str(tmp_path / "b.parquet"), "--engine", "ray",
                              "--address", address, "--actors", "2", "--output", str(out), "--precision", PRECISION],
                             capture_output=True, text=True, env=env, timeout=400)
    assert run.returncode == 0, run.stderr
    assert "400 rows (0 with an error)" in run.stderr
    assert (out / "_SUCCESS").is_file()
    rows = sorted(pq.read_table(out).to_pylist(), key=lambda row: row["row"])
    assert [row["row"] for row in rows] == list(range(400))
    for row, text, want in zip(rows, texts, single_process(tiny.export("bert"), texts)):
        assert row["text"] == text and row["error"] is None
        assert_same_predictions({t: {**p, "probabilities": dict(p["probabilities"])}
                                 for t, p in row["predictions"].items()}, want)


class two_node_cluster:
    """`ray start --head` and `ray start --address` on loopback, under a temporary folder of their own; stopped
    (those processes and their children) when the block ends, however it ends."""

    def __enter__(self):
        self.temp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        port = _free_port()
        # Token authentication (the default of `ray start --head`) needs a shared token; a loopback test cluster
        # does without.
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp}", "--disable-usage-stats"]
        try:
            _run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common], self.env)
            _run([RAY, "start", f"--address=127.0.0.1:{port}", *common], self.env)
        except BaseException:
            self.__exit__()
            raise
        return f"127.0.0.1:{port}", self.env

    def __exit__(self, *exc):
        _stop_processes_naming(self.temp)
        shutil.rmtree(self.temp, ignore_errors=True)


def _cluster_cpus(address: str, env: dict, want: str, timeout: float = 90) -> bool:
    """Whether `ray status` shows `want` within `timeout` (a node joins a few seconds after `ray start`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True, env=env,
                                timeout=60)
        if want in status.stdout:
            return True
        time.sleep(2)
    return False


def _run(command: list[str], env: dict) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_processes_naming(marker: str) -> None:
    """SIGTERM, then SIGKILL, to the processes whose command line holds `marker`, and to their descendants."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (parent, command)
    chosen = {pid for pid, (_, command) in table.items() if marker in command}
    grown = True
    while grown:
        children = {pid for pid, (parent, _) in table.items() if parent in chosen} - chosen
        chosen |= children
        grown = bool(children)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in chosen:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        time.sleep(2 if signum == signal.SIGTERM else 0)
