"""What runs one backend inside a worker process: PyTorch eager on a checkpoint, or ONNX Runtime on an export.

Each runner hands out zero-argument callables to time (a fixed-shape call in one mode, or one pass over a corpus)
and predicts labels for the accuracy check. Heavy imports happen in the runner that needs them, so an ONNX Runtime
worker never imports torch.

Modes: "seed" routes the way the seed project did (one encoder pass per task, then that task's head); "fused" runs
every head on one encoder pass (PyTorch's all-heads forward, ORT's model.onnx); "split" runs ORT's encoder.onnx once
and then each heads/<task>.onnx.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtl.bench.backends import Backend, offline_fused
from mtl.data.batching import length_sorted_batches
from mtl.errors import ConfigError, DeviceUnavailableError

Call = Callable[[], Any]


def import_engine(engine: str) -> None:
    """Import what a backend needs, so that a cold start can tell import time from load time."""
    if engine == "torch":
        import torch  # noqa: F401
        import transformers  # noqa: F401

        import mtl.model  # noqa: F401
    else:
        import onnxruntime  # noqa: F401

        import mtl.runtime.predictor  # noqa: F401


def open_runner(backend: Backend, checkpoint: str | None, onnx: str | None, threads: int):
    if backend.engine == "torch":
        return TorchRunner(Path(checkpoint), backend, threads)
    return OrtRunner(Path(onnx), backend, threads)


class TorchRunner:
    """Eager PyTorch: the checkpoint's MultitaskModel, as a user of the seed project would run it."""

    DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

    def __init__(self, checkpoint: Path, backend: Backend, threads: int):
        import torch
        import transformers
        from transformers import AutoTokenizer

        from mtl.artifacts.checkpoint import WEIGHTS_FILE
        from mtl.model import MultitaskModel

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # allowed only before the first parallel region
            torch.set_num_interop_threads(1)
        if backend.device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailableError(f"backend {backend.name} on cuda: this PyTorch build sees no CUDA device "
                                         f"(torch {torch.__version__}, CUDA {torch.version.cuda})")
        transformers.logging.set_verbosity_error()
        self.torch = torch
        self.device = backend.device
        dtype = getattr(torch, self.DTYPES[backend.precision])
        self.model = MultitaskModel.from_pretrained(checkpoint).to(device=self.device, dtype=dtype).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        self.config = self.model.model_config
        self.tasks = list(self.config.task_names)
        self.weights_bytes = (checkpoint / WEIGHTS_FILE).stat().st_size
        where = torch.cuda.get_device_name(0) if self.device == "cuda" else "CPU"
        provider = f"PyTorch eager ({where})"
        self.info = {"provider": provider, "versions": {"torch": torch.__version__,
                                                        "transformers": transformers.__version__}}

    def artifact_bytes(self, mode: str) -> int:
        return self.weights_bytes  # every mode runs the whole checkpoint

    def _forward(self, batch, mode: str, task: str | None = None) -> list:
        """Logits on the CPU as float32; `task` routes one task the seed's way."""
        inputs = {name: batch[name].to(self.device) for name in self.config.input_names}
        with self.torch.inference_mode():
            if task is not None:
                logits = [self.model(**inputs, task=task)["logits"][0]]
            elif mode == "seed":  # the seed's forward(task_name, ...): the whole encoder again for every task
                logits = [self.model(**inputs, task=name)["logits"][0] for name in self.tasks]
            else:
                logits = list(self.model(**inputs)["logits"])
            return [value.float().cpu() for value in logits]  # .cpu() also waits for CUDA to finish

    def sweep_call(self, mode: str, feeds: dict[str, np.ndarray]) -> Call:
        batch = {name: self.torch.from_numpy(feeds[name]) for name in self.config.input_names}
        return lambda: self._forward(batch, mode)

    def text_call(self, mode: str, texts: list[str], batch_size: int) -> tuple[Call, list[list[int]], str]:
        """What a naive user of the seed does: batches in input order, each padded to the model's max length,
        and with seed routing one pass over the corpus per task."""
        length = self.config.max_length
        chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]

        def one_pass(task: str | None) -> None:
            for chunk in chunks:
                batch = self.tokenizer(chunk, padding="max_length", truncation=True, max_length=length,
                                       return_tensors="pt")
                self._forward(batch, mode, task)

        def call() -> None:
            for task in self.tasks if mode == "seed" else [None]:  # seed: the corpus once per task
                one_pass(task)

        return call, [[len(chunk), length] for chunk in chunks], "max_length"

    def logits(self, texts: list[str], batch_size: int) -> dict[str, np.ndarray]:
        """Every task's logits with dynamic padding and length sorting: the accuracy check and cold start."""
        encoded = self.tokenizer(texts, truncation=True, max_length=self.config.max_length)
        out = {t: np.zeros((len(texts), len(self.config.task(t).labels)), np.float32) for t in self.tasks}
        for rows in length_sorted_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
            batch = self.tokenizer.pad({n: [encoded[n][i] for i in rows] for n in self.config.input_names},
                                       return_tensors="pt")
            for task, values in zip(self.tasks, self._forward(batch, "fused")):
                out[task][rows] = values.numpy()
        return out

    def release(self) -> None:
        """Nothing to drop between modes: the model is loaded once."""

    def close(self) -> None:
        self.release()


class OrtRunner:
    """ONNX Runtime through mtl.runtime: its sessions (explicit threads, IO binding on CUDA) for fixed shapes,
    its Predictor (tokenizers, dynamic padding, length sorting) for real text."""

    def __init__(self, folder: Path, backend: Backend, threads: int):
        from mtl.artifacts.manifest import load_manifest

        self.folder, self.backend, self.threads = folder, backend, threads
        self.manifest = load_manifest(folder)
        if backend.variant not in self.manifest.variants:
            raise ConfigError(f"backend {backend.name}: {folder} has no {backend.variant} variant")
        self.files = self.manifest.variants[backend.variant].files
        self.tasks = list(self.manifest.task_names)
        self._restore = _set_graph_optimization(backend.graph_optimization)
        self._sessions: dict[str, Any] = {}
        self._predictors: dict[str, Any] = {}
        import onnxruntime
        import tokenizers

        # GraphSession refuses to run on CPU when CUDA was asked for, so the device names the provider.
        provider = "CUDAExecutionProvider" if backend.device == "cuda" else "CPUExecutionProvider"
        self.info = {"provider": provider, "versions": {"onnxruntime": onnxruntime.__version__,
                                                    "tokenizers": tokenizers.__version__},
                     "offline_optimized": offline_fused(self.manifest)}

    def artifact_bytes(self, mode: str) -> int:
        files = [self.files.model] if mode == "fused" else [self.files.encoder, *self.files.heads.values()]
        return sum((self.folder / f).stat().st_size for f in files)

    def _session(self, key: str):
        from mtl.runtime.session import GraphSession

        if key not in self._sessions:
            if key == "model":
                path, spec = self.files.model, self.manifest.fused
            elif key == "encoder":
                path, spec = self.files.encoder, self.manifest.encoder
            else:
                path, spec = self.files.heads[key], self.manifest.heads[key]
            self._sessions[key] = GraphSession(self.folder / path, spec, self.backend.device, self.threads)
        return self._sessions[key]

    def sweep_call(self, mode: str, feeds: dict[str, np.ndarray]) -> Call:
        from mtl.artifacts.io_spec import EMBEDDING, logits_name

        self._drop_predictors()  # one copy of the graphs in memory at a time, so peak RSS is the mode's own
        feeds = {name: feeds[name] for name in self.manifest.input_names}
        if mode == "fused":
            fused, outputs = self._session("model"), [logits_name(t) for t in self.tasks]
            return lambda: fused.run(feeds, outputs)
        encoder = self._session("encoder")
        heads = {t: (self._session(t), [logits_name(t)]) for t in self.tasks}

        def split() -> list:
            embedding = encoder.run(feeds, [EMBEDDING])[0]  # (batch, hidden), once for every head
            return [session.run({EMBEDDING: embedding}, names)[0] for session, names in heads.values()]

        def seed() -> list:
            return [session.run({EMBEDDING: encoder.run(feeds, [EMBEDDING])[0]}, names)[0]
                    for session, names in heads.values()]

        return split if mode == "split" else seed

    def _predictor(self, execution: str, batch_size: int):
        from mtl.runtime import Predictor

        if execution not in self._predictors:
            self._sessions.clear()
            self._predictors[execution] = Predictor.load(
                self.folder, precision=self.backend.variant, device=self.backend.device, threads=self.threads,
                execution=execution, batch_size=batch_size)
        return self._predictors[execution]

    def text_call(self, mode: str, texts: list[str], batch_size: int) -> tuple[Call, list[list[int]], str]:
        """The runtime as users call it: tokenisation, length-sorted batches padded to their longest row."""
        predictor = self._predictor("fused" if mode == "fused" else "split", batch_size)
        if mode == "seed":  # one call per task; split execution runs the encoder and only that task's head
            call = lambda: [predictor.logits(texts, [task], batch_size) for task in self.tasks]  # noqa: E731
        else:
            call = lambda: predictor.logits(texts, None, batch_size)  # noqa: E731
        lengths = [len(e.ids) for e in predictor.text_encoder.encode(texts)]
        shapes = [[len(rows), max(lengths[i] for i in rows)] for rows in length_sorted_batches(lengths, batch_size)]
        return call, shapes, "dynamic"

    def logits(self, texts: list[str], batch_size: int) -> dict[str, np.ndarray]:
        return self._predictor("fused", batch_size).logits(texts, None, batch_size)

    def _drop_predictors(self) -> None:
        self._predictors.clear()

    def release(self) -> None:
        self._sessions.clear()
        self._predictors.clear()

    def close(self) -> None:
        self.release()
        self._restore()


def _set_graph_optimization(level: str) -> Callable[[], None]:
    """Make the runtime open its sessions at `level` ("basic" or "all"); returns the undo.

    mtl.runtime always asks ORT for every graph optimisation, which is right for users but leaves no way to
    measure the unfused fp32 graph. GraphSession builds its options with `session.session_options` at each
    session's creation, so wrapping that one function changes only this process, which runs only this backend
    (in-process runs undo it when the backend is done). A public `graph_optimization=` on Predictor.load would
    make this unnecessary."""
    import onnxruntime as ort

    from mtl.runtime import session as runtime_session

    original = runtime_session.session_options
    if level == "all":
        return lambda: None
    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}

    def options(threads: int):
        built = original(threads)
        built.graph_optimization_level = levels[level]
        return built

    runtime_session.session_options = options

    def undo() -> None:
        runtime_session.session_options = original

    return undo
