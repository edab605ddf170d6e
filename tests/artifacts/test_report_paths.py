"""Report files (--json, --markdown, --plot) go where the user pointed: a regular file is replaced whole, a symbolic
link keeps being a link and its target gets the report, a FIFO, /dev/null, /dev/stdout or /dev/fd/N is written
through (never replaced), and a place that cannot be written is one `OutputError` line, before any work where it
can be known; a failure while writing leaves the old report as it was."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mtl.artifacts import reports as reporting
from mtl.artifacts.reports import check_output_file, write_output_file
from mtl.errors import OutputError

TIMEOUT = 30  # seconds a FIFO's reader or writer may take before the test calls it a hang


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def in_thread(work):
    """Run `work` in a thread; (thread, results, errors) so the caller can join with a timeout."""
    results, errors = [], []

    def run():
        try:
            results.append(work())
        except BaseException as err:  # handed to the test's thread
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results, errors


def test_a_regular_file_is_replaced_whole_and_keeps_its_permissions(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old report, longer than the new one")
    path.chmod(0o604)
    before = path.stat().st_ino
    check_output_file(path)
    write_output_file(path, '{"new": 1}\n')
    assert path.read_text() == '{"new": 1}\n'
    assert path.stat().st_ino != before  # renamed over it, not rewritten in place: no reader sees half of it
    assert stat.S_IMODE(path.stat().st_mode) == 0o604
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_symlink_stays_a_link_and_its_target_gets_the_report(tmp_path):
    real = tmp_path / "kept" / "real.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    check_output_file(link)
    write_output_file(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.json"]  # no temporary file left beside it


def test_a_fifo_is_written_through_and_its_reader_gets_the_report(tmp_path):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    check_output_file(fifo)  # no reader yet: the check must not wait for one
    reader, received, _ = in_thread(lambda: fifo.read_text())
    writer, _, failed = in_thread(lambda: write_output_file(fifo, '{"rows": 3}\n'))
    writer.join(TIMEOUT)
    reader.join(TIMEOUT)
    assert not writer.is_alive() and not reader.is_alive(), "the FIFO hung"
    assert not failed and received == ['{"rows": 3}\n']
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still the FIFO, not a file renamed over it


def test_dev_null_is_written_through(tmp_path):
    check_output_file(Path("/dev/null"))
    write_output_file(Path("/dev/null"), "discarded")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_dev_fd_n_writes_into_that_descriptor():
    read_end, write_end = os.pipe()
    try:
        path = Path(f"/dev/fd/{write_end}")
        check_output_file(path)
        write_output_file(path, "through the pipe\n")
        os.close(write_end)
        write_end = None
        assert os.read(read_end, 1000) == b"through the pipe\n"
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)


WRITE_TO_STDOUT = ("from mtl.artifacts.reports import check_output_file, write_output_file\n"
                   "check_output_file('/dev/stdout')\n"
                   "print('printed before', flush=True)\n"
                   "write_output_file('/dev/stdout', 'REPORT\\n')\n"
                   "print('printed after')\n")


def test_dev_stdout_is_written_in_order_into_a_pipe_and_into_a_redirected_file(tmp_path):
    piped = subprocess.run([sys.executable, "-c", WRITE_TO_STDOUT], capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "printed before\nREPORT\nprinted after\n"
    # `> out.txt`: replacing the file would cut it off from the redirection (the report alone, or nothing).
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        redirected = subprocess.run([sys.executable, "-c", WRITE_TO_STDOUT], stdout=handle, stderr=subprocess.PIPE,
                                    text=True, timeout=120)
    assert redirected.returncode == 0, redirected.stderr
    assert out.read_text() == "printed before\nREPORT\nprinted after\n"


def test_a_closed_stdout_is_one_line():
    code = ("import os\nos.close(1)\nfrom mtl.artifacts.reports import check_output_file\nfrom mtl.errors import "
            "OutputError\ntry:\n    check_output_file('/dev/stdout')\nexcept OutputError as err:\n"
            "    raise SystemExit(f'refused: {err}')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stderr.strip() == "refused: /dev/stdout: names file descriptor 1, which is not open"


@pytest.mark.parametrize("path", ["/proc/version", "/proc/self/status", "/sys/kernel/report.json"])
def test_proc_and_sys_are_one_line_and_untouched(path):
    existed = Path(path).exists()
    with pytest.raises(OutputError) as refused:
        check_output_file(Path(path))
    assert one_line(refused).startswith(f"{path}: ")
    with pytest.raises(OutputError):
        write_output_file(Path(path), "report")
    assert Path(path).exists() == existed


def test_a_read_only_place_is_one_line_before_the_work(tmp_path, monkeypatch):
    # Root passes every permission check, so a read-only file system is simulated where it shows: creating a file.
    folder = tmp_path / "read-only"
    folder.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def no_folders(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "mkdir", no_folders)
    for target in (folder / "report.json", folder / "new" / "deeper" / "report.json"):
        with pytest.raises(OutputError) as refused:
            check_output_file(target)
        assert "no file can be created in" in one_line(refused) and "Read-only file system" in one_line(refused)
        with pytest.raises(OutputError, match="cannot be written \\(Read-only file system\\)"):
            write_output_file(target, "report")
    monkeypatch.undo()
    assert list(folder.iterdir()) == []


def test_a_full_disk_while_writing_leaves_the_old_report(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    path.write_text("the old report")

    def full(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(reporting.os, "fsync", full)  # where a delayed allocation reports the full disk
    with pytest.raises(OutputError) as refused:
        write_output_file(path, "x" * 100_000)
    assert one_line(refused) == f"{path}: cannot be written (No space left on device)"
    monkeypatch.undo()
    assert path.read_text() == "the old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_full_device_written_through_is_one_line(monkeypatch):
    read_end, write_end = os.pipe()
    real_write = os.write
    written = []

    def fills_up(handle, data):
        if written:  # the first block goes, the next finds the device full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(real_write(handle, bytes(data[:10])))
        return written[-1]

    monkeypatch.setattr(reporting.os, "write", fills_up)
    try:
        with pytest.raises(OutputError) as refused:
            write_output_file(Path(f"/dev/fd/{write_end}"), "0123456789 and more")
        assert one_line(refused).endswith("cannot be written (No space left on device)")
    finally:
        monkeypatch.undo()
        os.close(write_end)
        os.close(read_end)


def test_what_cannot_take_a_report_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cases = {
        tmp_path: "is a folder, not a file",
        tmp_path / "afile" / "report.json": "because",  # its parent is a file
        tmp_path / "dangling": "which does not exist",
        tmp_path / "loop": "cannot be written",
        Path("/dev/fd/987"): "names file descriptor 987, which is not open",
    }
    for path, fragment in cases.items():
        with pytest.raises(OutputError) as refused:
            check_output_file(path)
        assert fragment in one_line(refused), (path, str(refused.value))
    assert not (tmp_path / "gone").exists()


def test_the_bench_plot_goes_through_the_same_publisher(tmp_path):
    from mtl.bench.plot import write_plot
    from mtl.bench.records import Report
    from tests.factory import earlier_report

    report = Report.from_dict(earlier_report())
    real = tmp_path / "real.png"
    real.write_bytes(b"old picture")
    link = tmp_path / "bench.png"
    link.symlink_to(real)
    write_plot(report, link)
    assert link.is_symlink() and real.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.png", "real.png"]  # drawn in memory, no temp
    fifo = tmp_path / "bench.fifo"
    os.mkfifo(fifo)
    reader, received, _ = in_thread(lambda: fifo.read_bytes())
    writer, _, failed = in_thread(lambda: write_plot(report, fifo))
    writer.join(TIMEOUT)
    reader.join(TIMEOUT)
    assert not writer.is_alive() and not reader.is_alive(), "the FIFO hung"
    assert not failed and received[0] == real.read_bytes()
    with pytest.raises(OutputError, match="^/proc/bench.png: cannot be written"):
        write_plot(report, Path("/proc/bench.png"))


@pytest.mark.parametrize("option", ["--json", "--markdown", "--plot"])
def test_bench_checks_every_report_path_before_anything_else(tmp_path, option):
    from typer.testing import CliRunner

    from mtl.cli import app

    # No model folder at all: the report path is what is refused, so it was checked first.
    result = CliRunner().invoke(app, ["bench", str(tmp_path / "no-model"), option, "/proc/version"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: /proc/version: "), lines
    assert "no file can be created in /proc" in lines[0] or "is read-only" in lines[0]  # as root / as a user


def test_a_report_never_replaces_an_input_of_the_command(tmp_path):
    """`--json` given the data file, a link to it, or a file of the model folder would destroy what was read; a new
    file beside the model's files is fine."""
    data = tmp_path / "validation.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    model = tmp_path / "export"
    model.mkdir()
    (model / "manifest.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(data)
    for report, shown in ((data, str(data)), (tmp_path / "link.json", str(data)),
                          (model / "manifest.json", f"a file of {model}")):
        with pytest.raises(OutputError) as refused:
            check_output_file(report, [model, data])
        assert one_line(refused) == f"{report}: is {shown}, an input of this command; the report would replace it, " \
                                    f"so write it somewhere else"
    check_output_file(model / "metrics.json", [model, data])
    check_output_file(tmp_path / "other.json", [model, None, data])
    assert data.read_text() == '{"text": "a", "label": "x"}\n' and (model / "manifest.json").read_text() == "{}"


def test_evaluate_refuses_a_json_path_that_is_its_own_data_before_loading_the_model(tmp_path):
    from typer.testing import CliRunner

    from mtl.cli import app

    data = tmp_path / "topic.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    # No model folder at all: the report path is what is refused, so it was checked before the model loaded.
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "no-model"), "-t", f"topic={data}", "--json",
                                      str(data)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {data}: is {data}, an input of this command; the report would replace it, so write it somewhere else"]
    assert data.read_text() == '{"text": "a", "label": "x"}\n'
