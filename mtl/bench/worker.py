"""One backend in a process of its own: `python -m mtl.bench.worker` reads a job (JSON) on stdin and writes
events, one JSON object a line, on stdout: "loaded", "cell" (a measurement starts), "row" (raw latencies of one
finished measurement, and the provider it ran on), "predictions" (for the accuracy check), "prediction" (a cold
start's first one), "error" (a user's mistake, one line) and "done" (with the process's peak RSS and which heavy
modules it imported).

A process per backend is what makes the figures clean: its peak RSS is that backend's alone, its thread settings
cannot leak into another backend's, and an ONNX Runtime worker never imports torch. `execute` is also called
in-process (tests, debugging), with the same events.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Callable

from mtl.bench.records import ColdStartRun, Measurement
from mtl.errors import UserError

Emit = Callable[[dict], None]
MIN_RUNS = 3  # timed runs kept even when a cell overruns its time budget: p50 of fewer says little
HEAVY_MODULES = ("torch", "transformers", "onnxruntime")


def peak_rss_bytes() -> int | None:
    """This process's own peak RSS. On Linux from VmHWM, the high-water mark of the current address space:
    getrusage's ru_maxrss survives fork + exec, so a worker spawned by a 2 GB parent would report 2 GB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux reports KiB, macOS bytes


def time_calls(call: Callable[[], Any], warmup: int, runs: int, max_seconds: float) -> list[float]:
    """Seconds per call after `warmup` untimed calls: `runs` of them, or fewer (never under MIN_RUNS) once
    `max_seconds` have gone, so one slow cell cannot eat the whole bench."""
    for _ in range(warmup):
        call()
    latencies: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(latencies) < runs:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
        if len(latencies) >= min(MIN_RUNS, runs) and time.perf_counter() > deadline:
            break
    return latencies


def execute(job: dict[str, Any], emit: Emit) -> None:
    if job["kind"] == "cold_start":
        cold_start(job, emit)
    else:
        bench(job, emit)


def bench(job: dict[str, Any], emit: Emit) -> None:
    from mtl.bench.backends import Backend
    from mtl.bench.engines import open_runner

    backend = Backend.from_dict(job["backend"])
    started = time.perf_counter()
    runner = open_runner(backend, job["checkpoint"], job["onnx"], job["threads"])
    try:
        emit({"event": "loaded", "seconds": time.perf_counter() - started, "info": runner.info.to_dict()})
        for mode in job["modes"]:
            _sweep(runner, backend.name, mode, job, emit)
            if job.get("text"):
                _text(runner, backend.name, mode, job, emit)
        for task, texts in (job.get("validation") or {}).items():
            emit({"event": "cell", "label": f"{backend.name} accuracy on {task}"})
            logits = runner.logits(texts, job["text"]["batch_size"] if job.get("text") else 32)[task]
            emit({"event": "predictions", "task": task, "predicted": logits.argmax(-1).tolist()})
    finally:
        runner.close()
    emit({"event": "done", "peak_rss_bytes": peak_rss_bytes(), "modules": _heavy_modules()})


def _sweep(runner, name: str, mode: str, job: dict[str, Any], emit: Emit) -> None:
    from mtl.bench.workloads import Shape, synthetic_inputs

    for batch, sequence in job["shapes"]:
        shape = Shape(batch, sequence)
        emit({"event": "cell", "label": f"{name} {mode} {shape.label}"})
        call = runner.sweep_call(mode, synthetic_inputs(shape, job["vocab_size"]))
        latencies = time_calls(call, job["warmup"], job["runs"], job["max_cell_seconds"])
        measured = Measurement("synthetic", mode, batch, sequence, items_per_call=batch, latencies_s=latencies,
                               artifact_bytes=runner.artifact_bytes(mode))
        emit({"event": "row", "row": measured.to_dict(), "provider": runner.provider()})


def _text(runner, name: str, mode: str, job: dict[str, Any], emit: Emit) -> None:
    spec = job["text"]
    texts, batch_size = spec["texts"], spec["batch_size"]
    for text_pass in runner.text_calls(mode, texts, batch_size):
        emit({"event": "cell", "label": f"{name} {mode} {text_pass.padding} text ({len(texts)} texts)"})
        # Warm up on whole passes: every batch shape the timed passes meet has run once (a lazily built kernel
        # or ORT's per-shape allocations would otherwise land in the first timed pass).
        latencies = time_calls(text_pass.call, spec["warmup"], spec["runs"], job["max_cell_seconds"])
        shapes = text_pass.shapes
        measured = Measurement("text", mode, batch_size, None, items_per_call=len(texts), latencies_s=latencies,
                               artifact_bytes=runner.artifact_bytes(mode), batch_shapes=shapes,
                               padding=text_pass.padding, padded_tokens=sum(b * s for b, s in shapes))
        emit({"event": "row", "row": measured.to_dict(), "provider": runner.provider()})


def cold_start(job: dict[str, Any], emit: Emit) -> None:
    """What `mtl-onnx predict MODEL "text"` does in a fresh process: import, load, predict one text. The parent
    times it from spawn to this process's first output line."""
    from mtl.bench.backends import Backend
    from mtl.bench.engines import import_engine, open_runner

    backend = Backend.from_dict(job["backend"])
    started = time.perf_counter()
    import_engine(backend.engine)
    imported = time.perf_counter()
    runner = open_runner(backend, job["checkpoint"], job["onnx"], job["threads"])
    loaded = time.perf_counter()
    runner.logits([job["text"]], 1)
    predicted = time.perf_counter()
    run = ColdStartRun(import_s=imported - started, load_s=loaded - imported, predict_s=predicted - loaded,
                       peak_rss_bytes=peak_rss_bytes(), modules=_heavy_modules())
    emit({"event": "prediction", **run.to_dict()})
    runner.close()


def _heavy_modules() -> dict[str, bool]:
    return {name: name in sys.modules for name in HEAVY_MODULES}


def main() -> int:
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # whatever a library prints (C or Python) goes to stderr, never into the event stream
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    def emit(event: dict) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    try:
        execute(json.loads(sys.stdin.read()), emit)
    except UserError as err:
        emit({"event": "error", "message": str(err)})
        return 2
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent keeps what was sent
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
