"""Running a planned bench: a worker process per backend (sweep, real text, accuracy), then a cold start per
backend; rows are kept as each arrives, so Ctrl-C or a failing backend still leaves every finished one.

The report is a `records.Report`: raw latencies and unformatted numbers (`to_dict` for JSON). `mtl.bench.report`
renders it. No torch in this process: PyTorch runs only inside its own worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import mtl
from mtl.bench.backends import PLAIN_INT8, Backend
from mtl.bench.environment import busy_note, collect_environment
from mtl.bench.plan import COLD_START_TEXT, BenchOptions, BenchPlan, plan_bench
from mtl.bench.records import (
    AccuracyRow,
    ColdStart,
    ColdStartRun,
    EngineInfo,
    Measurement,
    Report,
    Row,
    Settings,
    TextSettings,
    WorkerRecord,
)
from mtl.bench.stats import BASELINE, ENGINE_BASELINE, add_speedups, batches_flops, call_flops, latency_summary
from mtl.bench.worker import MIN_RUNS
from mtl.errors import BenchError, UserError

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]  # (what runs now, units done, units in all)
INTERRUPTED_CODES = (130, -signal.SIGINT)  # the worker's own exit on Ctrl-C, or killed by the signal
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS",
                    "RAYON_RS_NUM_CPUS")


class _Progress:
    def __init__(self, total: int, callback: ProgressCallback | None):
        self.total, self.done, self.callback, self.current = total, 0, callback, ""

    def label(self, text: str) -> None:
        self.current = text
        self._tell()

    def advance(self) -> None:
        self.done += 1
        self._tell()

    def _tell(self) -> None:
        if self.callback:
            self.callback(self.current, self.done, self.total)


def run_bench(plan: BenchPlan, on_progress: ProgressCallback | None = None) -> Report:
    """Every backend of the plan, measured; returns the report, also when interrupted (`interrupted`) or when a
    backend failed (`failed`: one line), with the rows finished before."""
    report = _new_report(plan)
    progress = _Progress(plan.total_units(), on_progress)
    predictions: dict[str, dict[str, list[int]]] = {}
    try:
        for backend in plan.backends:
            _run_backend(plan, backend, report, predictions, progress)
        for backend in plan.cold_start_backends:
            report.cold_start.append(_cold_start(plan, backend, progress))
    except KeyboardInterrupt:
        report.interrupted = True
        log.info("interrupted: keeping the %d finished row(s)", len(report.rows))
    except UserError as err:
        report.failed = str(err)
    add_speedups(report.rows)
    report.accuracy = accuracy_rows(predictions, plan.validation)
    return report


def quick_bench(checkpoint: Path, export_dir: Path, *, validation_data: dict[str, Path] | str | None = None,
                threads: int | None = None, cold_start: bool = True, device: str = "cpu",
                on_progress: ProgressCallback | None = None) -> Report:
    """A small bench for `mtl-onnx quickstart`: batch 1 and 8 at 32 and 128 tokens, per-task routing against fused,
    128 real texts, PyTorch fp32 against every ONNX variant the export holds (about a minute on 2 cores with
    MiniLM; PyTorch int8 and the peer are left to `mtl-onnx bench`); on "cuda", every ONNX variant that runs
    there. `validation_data` ({task: file} or "demo") adds each backend's accuracy. Render the result with
    `mtl.bench.report.rich_tables`."""
    options = BenchOptions(checkpoint=Path(checkpoint), onnx=Path(export_dir), backends="torch-fp32,ort",
                           modes="per-task,fused",
                           batch_sizes=(1, 8), sequence_lengths=(32, 128), warmup=1, runs=5, max_cell_seconds=2.0,
                           corpus_limit=128, text_runs=2, validation_data=validation_data or {},
                           validation_limit=200, cold_start=cold_start, threads=threads, device=device)
    return run_bench(plan_bench(options), on_progress)


def _new_report(plan: BenchPlan) -> Report:
    options = plan.options
    environment = collect_environment(plan.threads)
    busy = busy_note(environment.load_average_at_start, environment.cpu.usable_cores)
    settings = Settings(
        device=options.device, threads=plan.threads, isolated=options.isolate, warmup=options.warmup,
        runs=options.runs, min_runs=MIN_RUNS, max_cell_seconds=options.max_cell_seconds,
        shapes=[[s.batch, s.sequence] for s in plan.shapes], text=_text_settings(plan.text),
        validation={t: {"file": d["file"], "examples": len(d["labels"])} for t, d in plan.validation.items()},
        speedup_baseline="-".join(BASELINE[:2]) + f" ({BASELINE[2]} routing)", engine_speedup_baseline=ENGINE_BASELINE)
    model = {
        "checkpoint": str(options.checkpoint) if options.checkpoint else None,
        "onnx": str(options.onnx) if options.onnx else None,
        "backbone": plan.config.backbone, "max_length": plan.config.max_length,
        "tasks": {t.name: len(t.labels) for t in plan.config.tasks}, "encoder": plan.dims.to_dict(),
    }
    return Report(created=datetime.now(timezone.utc).isoformat(timespec="seconds"), environment=environment,
                  settings=settings, model=model,
                  backends=[{**b.to_dict(), "modes": list(plan.modes[b.name])} for b in plan.backends],
                  notes=list(plan.notes) + ([busy] if busy else []))


def _text_settings(text: dict[str, Any] | None) -> TextSettings | None:
    if text is None:
        return None
    batches = -(-len(text["texts"]) // text["batch_size"])  # per pass
    return TextSettings(source=text["source"], texts=len(text["texts"]), batch_size=text["batch_size"],
                        runs=text["runs"], warmup_batches=text["warmup"] * batches, warmup_passes=text["warmup"])


def _bench_job(plan: BenchPlan, backend: Backend, onnx: Path | None) -> dict[str, Any]:
    options = plan.options
    return {
        "kind": "bench", "backend": backend.to_dict(), "threads": plan.threads,
        "checkpoint": str(options.checkpoint) if options.checkpoint else None,
        "onnx": str(onnx) if onnx else None,
        "modes": list(plan.modes[backend.name]), "shapes": [[s.batch, s.sequence] for s in plan.shapes],
        "vocab_size": plan.dims.vocab_size, "warmup": options.warmup, "runs": options.runs,
        "max_cell_seconds": options.max_cell_seconds,
        "text": {k: plan.text[k] for k in ("texts", "batch_size", "runs", "warmup")} if plan.text else None,
        "validation": {task: data["texts"] for task, data in plan.validation.items()},
    }


def _run_backend(plan: BenchPlan, backend: Backend, report: Report, predictions: dict, progress: _Progress) -> None:
    info: EngineInfo | None = None
    load_s: float | None = None
    mine: list[Row] = []

    def handle(event: dict) -> None:
        nonlocal info, load_s
        kind = event["event"]
        if kind == "cell":
            progress.label(event["label"])
        elif kind == "loaded":
            info, load_s = EngineInfo.from_dict(event["info"]), event["seconds"]
        elif kind == "row":
            mine.append(finish_row(Measurement.from_dict(event["row"]), backend, info, plan, event.get("provider")))
            report.rows.append(mine[-1])
            progress.advance()
        elif kind == "predictions":
            predictions.setdefault(backend.name, {})[event["task"]] = event["predicted"]
            progress.advance()
        elif kind == "done" and plan.options.isolate:
            for row in mine:
                row.peak_rss_bytes = event["peak_rss_bytes"]
            report.workers.append(WorkerRecord(backend.name, load_s, event["peak_rss_bytes"], event["modules"]))
        elif kind == "error":
            raise BenchError(f"{backend.name}: {event['message']}")

    with _export_folder(plan, backend, progress) as onnx:
        progress.label(f"{backend.name}: loading")
        if plan.options.isolate:
            _run_process(_bench_job(plan, backend, onnx), handle, plan.threads, backend.name)
        else:
            from mtl.bench import worker

            worker.execute(_bench_job(plan, backend, onnx), handle)


@contextlib.contextmanager
def _export_folder(plan: BenchPlan, backend: Backend, progress: _Progress) -> Iterator[Path | None]:
    """The export folder the backend's worker reads: the bench's own, or for int8-plain the one built from it here
    (`plain_int8`), removed once the worker is done."""
    if backend.precision != PLAIN_INT8:
        yield plan.options.onnx
        return
    from mtl.bench.plain_int8 import plain_int8_export

    progress.label(f"{backend.name}: quantising the export's fp32 graphs without attention fusion")
    with tempfile.TemporaryDirectory(prefix="mtl-bench-int8-plain-") as scratch:
        yield plain_int8_export(Path(plan.options.onnx), Path(scratch) / "onnx")


def finish_row(measured: Measurement, backend: Backend, info: EngineInfo, plan: BenchPlan,
               provider: str | None = None) -> Row:
    """A worker's raw measurement, with what it ran on (`provider`: what its sessions reported for this row; else
    what the worker loaded) and the figures derived from its latencies."""
    summary = latency_summary(measured.latencies_s, measured.items_per_call)
    labels = [len(t.labels) for t in plan.config.tasks]
    if measured.workload == "synthetic":
        flops = call_flops(plan.dims, labels, measured.batch_size, measured.sequence_length, measured.mode)
    else:
        flops = batches_flops(plan.dims, labels, measured.batch_shapes, measured.mode)
    return Row(backend, provider or info.provider, plan.threads, info.offline_optimized, info.versions, measured,
               summary, flops_per_call=flops, gflops_per_s=flops / summary.p50_s / 1e9 if summary.p50_s > 0 else None)


def worker_env(threads: int) -> dict[str, str]:
    """The worker's environment: every thread pool it may start (OpenMP, MKL, the tokenizers' Rayon pool) capped
    at the bench's thread count, and this copy of mtl importable whatever the working directory."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    root = str(Path(mtl.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _spawn(threads: int, errors) -> subprocess.Popen:
    # stderr goes to a file, not a pipe: a chatty library could fill a pipe nobody reads and stall the worker.
    return subprocess.Popen([sys.executable, "-m", "mtl.bench.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=errors, text=True, encoding="utf-8",
                            env=worker_env(threads))


def _run_process(job: dict, handle: Callable[[dict], None], threads: int, name: str) -> None:
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errors:
        process = _spawn(threads, errors)
        try:
            process.stdin.write(json.dumps(job))
            process.stdin.close()
            for line in process.stdout:
                event = _parse(line)
                if event:
                    handle(event)
            code = process.wait()
        finally:
            _stop(process)
        _check_exit(code, name, errors)


def _check_exit(code: int, name: str, errors) -> None:
    if code in INTERRUPTED_CODES:  # Ctrl-C reached the worker first; this process's own interrupt may still come
        raise KeyboardInterrupt
    if code not in (0, 2):  # 2: a user error, already raised from its "error" event
        raise BenchError(f"the {name} worker failed (exit code {code}): {_last_line(errors)}")


def _parse(line: str) -> dict | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:  # a line cut short by Ctrl-C
        return None


def _stop(process: subprocess.Popen) -> None:
    """End a worker this bench started (Ctrl-C or a failure elsewhere), without leaving a zombie."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _last_line(stream) -> str:
    stream.seek(0)
    lines = [line.strip() for line in stream.read().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no error message"


def _cold_start(plan: BenchPlan, backend: Backend, progress: _Progress) -> ColdStart:
    options = plan.options
    job = {"kind": "cold_start", "backend": backend.to_dict(), "threads": plan.threads, "text": COLD_START_TEXT,
           "checkpoint": str(options.checkpoint) if options.checkpoint else None,
           "onnx": str(options.onnx) if options.onnx else None}
    runs = []
    for _ in range(options.cold_runs):
        progress.label(f"{backend.name} cold start")
        runs.append(_one_cold_start(job, plan.threads, backend.name))
        progress.advance()
    return ColdStart.of_runs(backend, runs)


def _one_cold_start(job: dict, threads: int, name: str) -> ColdStartRun:
    """From spawning a fresh interpreter to its first prediction: what a user waits for on `mtl-onnx predict`
    (the files are in the page cache after the sweep, as they are on a machine that serves them)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errors:
        started = time.perf_counter()
        process = _spawn(threads, errors)
        try:
            process.stdin.write(json.dumps(job))
            process.stdin.close()
            first = _parse(process.stdout.readline() or "")
            seconds = time.perf_counter() - started
            process.stdout.read()
            code = process.wait()
        finally:
            _stop(process)
        if code in INTERRUPTED_CODES:
            raise KeyboardInterrupt
        if not first or first.get("event") != "prediction":
            detail = first["message"] if first and first.get("event") == "error" else _last_line(errors)
            raise BenchError(f"{name} cold start failed: {detail}")
    return replace(ColdStartRun.from_dict(first), seconds=seconds)


def accuracy_rows(predictions: dict[str, dict[str, list[int]]], validation: dict[str, dict]) -> list[AccuracyRow]:
    """Per backend and task: accuracy, and its difference to (and agreement with) the reference backend's
    predictions: PyTorch fp32 where it ran, else the first backend."""
    if not predictions:
        return []
    reference = "torch-fp32" if "torch-fp32" in predictions else next(iter(predictions))
    rows = []
    for backend, tasks in predictions.items():
        for task, predicted in tasks.items():
            truth = np.asarray(validation[task]["labels"])
            mine = np.asarray(predicted)
            ref = np.asarray(predictions.get(reference, {}).get(task, []))
            accuracy = float(np.mean(mine == truth))
            compared = ref.size == mine.size
            rows.append(AccuracyRow(
                backend, task, int(truth.size), accuracy, reference,
                delta_points=100 * (accuracy - float(np.mean(ref == truth))) if compared else None,
                agreement=float(np.mean(mine == ref)) if compared else None))
    return rows
